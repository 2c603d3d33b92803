"""Batches of a buffer of events: which events go together (bucketing), and padding them (numpy only).

Batches are cut with fancy indexing on a :class:`~.chunks.Chunk`'s flat arrays::

    hits[b, l] = features[hit_offsets[event[b]] + l]   for l < n_hits[event[b]], else padding

Random groups of ``bucket_width`` batches are sorted by hit count (length bucketing: little padding, so
little wasted attention, while batches still mix event kinds), cut into batches, and the batch order is
shuffled. Events that do not fill a whole batch are carried over to the next buffer. Shared by the
streaming loader (:mod:`.stream`) and the device-resident path (:mod:`.resident`), so both cut the same
batches.
"""

from __future__ import annotations

import numpy as np

from .chunks import Chunk


def collate(chunk: Chunk, idx: np.ndarray, max_muons: int) -> dict[str, np.ndarray]:
    """Pad events ``idx`` of ``chunk`` into one batch (numpy; the loader wraps it in tensors).

    Hits are padded to the longest event of the batch, muons to ``min(max_muons, most in batch)``.
    Hits of muons beyond ``max_muons`` become background (link -1): they are not regressed. The rule is
    per event (a link at or beyond ``min(muons of its event, max_muons)`` is -1), so it needs nothing
    of the rest of the batch: the device-resident path applies it once, at load (:func:`clip_links`).
    """
    idx = np.asarray(idx, dtype=np.int64)
    B = len(idx)
    starts = chunk.hit_offsets[idx]
    lens = chunk.hit_offsets[idx + 1] - starts  # [B]
    L = max(int(lens.max(initial=0)), 1)
    ar = np.arange(L, dtype=np.int64)
    hit_mask = ar[None, :] < lens[:, None]  # [B, L]
    pos = np.where(hit_mask, starts[:, None] + ar[None, :], 0)  # [B, L]
    if len(chunk.hits):
        hits = chunk.hits[pos]  # [B, L, F]
        hits[~hit_mask] = 0.0
        link = chunk.link[pos].astype(np.int64)  # [B, L]
    else:
        hits = np.zeros((B, L, chunk.hits.shape[1]), dtype=np.float32)
        link = np.full((B, L), -1, dtype=np.int64)
    link[~hit_mask] = -1

    mstarts = chunk.muon_offsets[idx]
    mlens = np.minimum(chunk.muon_offsets[idx + 1] - mstarts, max_muons)  # [B]
    M = max(int(mlens.max(initial=0)), 1)
    mar = np.arange(M, dtype=np.int64)
    muon_mask = mar[None, :] < mlens[:, None]  # [B, M]
    mpos = np.where(muon_mask, mstarts[:, None] + mar[None, :], 0)
    muons = chunk.muons[mpos] if len(chunk.muons) else np.zeros((B, M, chunk.muons.shape[1]), np.float32)
    muons[~muon_mask] = 0.0  # [B, M, K]
    link[link >= mlens[:, None]] = -1
    return {"hits": hits, "hit_mask": hit_mask, "link": link, "muons": muons, "muon_mask": muon_mask,
            "event": chunk.event[idx], "row": chunk.row[idx]}


def clip_links(chunk: Chunk, max_muons: int) -> np.ndarray:
    """``chunk.link`` [N_hits] as int64 with :func:`collate`'s rule applied: -1 where the link is at or
    beyond ``min(muons of the hit's event, max_muons)`` (hits of muons that are not regressed)."""
    limit = np.repeat(np.minimum(np.diff(chunk.muon_offsets), max_muons), np.diff(chunk.hit_offsets))
    link = chunk.link.astype(np.int64)
    link[link >= limit] = -1
    return link


def bucket_batches(n_hits: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   width: int = 0) -> list[np.ndarray]:
    """Cut events into batches of similar hit count; shuffle the batch order.

    ``width`` > 0 (training): events are drawn at random into groups of ``width`` batches and sorted
    by hit count only within a group, so every batch is a random draw from one quantile of a random
    group: little padding, yet batches mix event kinds (a whole-buffer sort, ``width`` = 0, made a
    quarter of the batches one-muon events only). Without ``rng`` (evaluation) the order is
    deterministic and the whole buffer is sorted.
    """
    if rng is None:
        order = np.argsort(n_hits, kind="stable")
    else:
        perm = rng.permutation(len(n_hits))
        if width > 0:
            group = width * batch_size
            order = np.concatenate([perm[i:i + group][np.argsort(n_hits[perm[i:i + group]], kind="stable")]
                                    for i in range(0, len(perm), group)] or [perm])
        else:
            order = perm[np.argsort(n_hits[perm], kind="stable")]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def cut_buffer(n_hits: np.ndarray, last: bool, batch_size: int, rng: np.random.Generator | None,
               width: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """One shuffle buffer of events (hit counts ``n_hits`` [E]) → (batches, carry-over).

    Batches are arrays of positions in the buffer; the carry-over positions (events that do not fill a
    whole batch, unless ``last``) go into the next buffer. Shared by the streaming loader and the
    device-resident path (:mod:`pipeline.train.data.resident`), so both cut the same batches.
    """
    n = len(n_hits)
    n_full = n if last else (n // batch_size) * batch_size
    if rng is not None and n_full < n:
        perm = rng.permutation(n)
        use, carry = perm[:n_full], perm[n_full:]
    else:
        use, carry = np.arange(n_full), np.arange(n_full, n)
    return [use[b] for b in bucket_batches(n_hits[use], batch_size, rng, width)], carry
