"""Shards → padded batches, with no Python loop per event.

A dataset directory (written by ``muon-pipeline convert``) is a ``manifest.json`` plus Parquet shards of
one row per event with ``hits`` and ``truthMuons`` list<struct> columns. One *unit* of work is one row
group of one shard. Reading a unit gives a :class:`Chunk`: the list offsets and the flattened struct
children as numpy arrays (zero-copy views from Arrow; the only copy is the normalised ``[n_hits, F]``
feature matrix). Batches are then cut with fancy indexing on those flat arrays:

    hits[b, l] = features[hit_offsets[event[b]] + l]   for l < n_hits[event[b]], else padding

Shuffling is bounded: units are read in a random order into a buffer of ``shuffle_buffer`` events,
random groups of ``bucket_width`` batches are sorted by hit count (length bucketing: little padding,
so little wasted attention, while batches still mix event kinds), cut into batches, and the batch
order is shuffled. Events that do not fill a whole batch are carried
over to the next buffer, so the number of batches a worker yields is ``ceil(events / batch_size)``
whatever the order; that makes ``len()`` exact and lets DDP ranks agree on a common count.

Train / val / test membership is a pure function of ``eventNumber`` (splitmix64 hash), so a split is
reproducible across re-conversions, shard layouts and worker counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from ..schema import Schema

SPLITS = {"train": 0, "val": 1, "test": 2}
LINK_FIELD = "spacePoint_truthLink"


# --------------------------------------------------------------------------------------------------
# dataset description


@dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a converted dataset directory."""

    root: Path
    schema: Schema
    shards: tuple[Path, ...]
    statistics: dict[str, dict[str, dict[str, float]]]
    manifest: dict[str, Any]

    @property
    def muon_fields(self) -> list[str]:
        """Truth-muon fields in schema order; batches carry all of them (targets are picked by index)."""
        return self.schema.names("muon")


def open_dataset(root: str | Path, verify_checksums: bool = True) -> DatasetInfo:
    """Open a dataset with the shared opener (:func:`pipeline.dataset.open_dataset`): the manifest's shape,
    the shard path rules (nothing outside the dataset's ``shards/``), every shard's schema, and by default
    every shard's sha256, so the trainer reads only what ``validate`` would accept of the files.

    ``verify_checksums=False`` skips the sha256 pass (it reads every byte once; see README for its cost).
    Raises ``DatasetError`` with one line naming the dataset, the shard or manifest key, and why.
    """
    from ..dataset import open_dataset as open_checked

    root = Path(root)
    if not (root / "manifest.json").is_file():
        raise DatasetError(f"{root}: no manifest.json; expected a directory written by `muon-pipeline convert`")
    ds = open_checked(str(root), checksums=verify_checksums)
    shards = tuple(Path(p) for p in ds.local_paths())
    return DatasetInfo(root=root, schema=ds.schema, shards=shards,
                       statistics=ds.manifest.get("statistics") or {}, manifest=ds.manifest)


# --------------------------------------------------------------------------------------------------
# split and normalisation


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised: a well-mixed 64-bit hash of each integer."""
    z = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def split_codes(event_numbers: np.ndarray, train_fraction: float, val_fraction: float,
                seed: int = 0) -> np.ndarray:
    """0 = train, 1 = val, 2 = test for each event, from a hash of ``eventNumber`` (and ``seed``)."""
    with np.errstate(over="ignore"):
        salted = np.asarray(event_numbers).astype(np.uint64) ^ splitmix64(np.array([seed], dtype=np.int64))[0]
    u = (splitmix64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # uniform in [0, 1)
    return np.where(u < train_fraction, 0, np.where(u < train_fraction + val_fraction, 1, 2)).astype(np.int8)


@dataclass(frozen=True)
class Normalisation:
    """Per-field ``(x - mean) / std`` for the hit inputs; saved with the model."""

    fields: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {f: {"mean": m, "std": s} for f, m, s in zip(self.fields, self.mean, self.std, strict=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        return cls(tuple(d), tuple(float(v["mean"]) for v in d.values()), tuple(float(v["std"]) for v in d.values()))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.mean, dtype=np.float32), np.asarray(self.std, dtype=np.float32)


def normalisation_for(info: DatasetInfo, hit_fields: Sequence[str]) -> Normalisation:
    """Mean / std of each hit input from the manifest statistics (computed from a shard if absent).

    A constant field (std 0, e.g. ``driftR`` in a strip-only sample) gets std 1 so it stays finite.
    """
    stats = info.statistics.get(info.schema.hit_column, {})
    missing = [f for f in hit_fields if f not in stats]
    if missing:
        stats = {**stats, **_statistics_from_shard(info, missing)}
    mean, std = [], []
    for f in hit_fields:
        m, s = float(stats[f]["mean"]), float(stats[f]["std"])
        if not (math.isfinite(m) and math.isfinite(s)):
            raise DatasetError(f"{info.root}: manifest statistics of {f} are not finite (mean={m}, std={s})")
        mean.append(m)
        std.append(s if s > 0 else 1.0)
    return Normalisation(tuple(hit_fields), tuple(mean), tuple(std))


def _statistics_from_shard(info: DatasetInfo, fields: Sequence[str]) -> dict[str, dict[str, float]]:
    import pyarrow.parquet as pq

    hits = pq.read_table(info.shards[0], columns=[info.schema.hit_column]).column(0).combine_chunks()
    values = hits.flatten()
    out = {}
    for f in fields:
        x = values.field(f).to_numpy().astype(np.float64)
        out[f] = {"mean": float(x.mean()) if x.size else 0.0, "std": float(x.std()) if x.size else 1.0}
    return out


# --------------------------------------------------------------------------------------------------
# chunks: flat arrays of a set of events


@dataclass
class Chunk:
    """Events as flat arrays plus offsets (the Arrow layout, in numpy)."""

    hit_offsets: np.ndarray  # [E + 1] int64
    hits: np.ndarray  # [N_hits, F] float32, normalised
    link: np.ndarray  # [N_hits] int32, -1 = background
    muon_offsets: np.ndarray  # [E + 1] int64
    muons: np.ndarray  # [N_muons, K] float32, all truth-muon fields in schema order
    event: np.ndarray  # [E] int64 eventNumber
    row: np.ndarray  # [E] int64 global row id: shard index << 32 | row in shard

    def __len__(self) -> int:
        return len(self.event)

    @property
    def n_hits(self) -> np.ndarray:  # [E]
        return np.diff(self.hit_offsets)


def _gather_ranges(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of the elements of events ``idx`` and the new offsets, vectorised."""
    starts, lens = offsets[idx], offsets[idx + 1] - offsets[idx]
    new_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_offsets[1:])
    positions = np.repeat(starts - new_offsets[:-1], lens) + np.arange(new_offsets[-1], dtype=np.int64)
    return positions, new_offsets


def take_events(chunk: Chunk, idx: np.ndarray) -> Chunk:
    idx = np.asarray(idx, dtype=np.int64)
    hpos, hoff = _gather_ranges(chunk.hit_offsets, idx)
    mpos, moff = _gather_ranges(chunk.muon_offsets, idx)
    return Chunk(hoff, chunk.hits[hpos], chunk.link[hpos], moff, chunk.muons[mpos], chunk.event[idx], chunk.row[idx])


def concat_chunks(chunks: Sequence[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]

    def offsets(name: str) -> np.ndarray:
        parts, base = [np.zeros(1, dtype=np.int64)], 0
        for c in chunks:
            o = getattr(c, name)
            parts.append(o[1:] + base)
            base += int(o[-1])
        return np.concatenate(parts)

    return Chunk(offsets("hit_offsets"), np.concatenate([c.hits for c in chunks]),
                 np.concatenate([c.link for c in chunks]), offsets("muon_offsets"),
                 np.concatenate([c.muons for c in chunks]), np.concatenate([c.event for c in chunks]),
                 np.concatenate([c.row for c in chunks]))


def chunk_from_table(table: Any, schema: Schema, hit_fields: Sequence[str], norm: Normalisation,
                     row_base: int = 0, frame_fields: Sequence[str] = (),
                     assignment_field: str = LINK_FIELD) -> Chunk:
    """Arrow table (``eventNumber``, ``hits``, ``truthMuons``) → :class:`Chunk`.

    ``ListArray.offsets`` and the struct children of ``ListArray.values`` are read as numpy views;
    offsets are rebased so a sliced array works too. The feature matrix is ``[N_hits, F]`` float32
    with ``F = len(hit_fields) + len(frame_fields)``: the normalised dataset inputs, then the
    muon-frame inputs (:mod:`pipeline.muon_frame`, already O(1)) of each hit in the frame of the
    object ``assignment_field`` assigns it to.
    """
    from ..shards import list_column  # the one reader of list<struct> columns: zero-copy views

    event = table.column("eventNumber").to_numpy().astype(np.int64, copy=False)
    hoff, hvals = list_column(table.column(schema.hit_column))
    moff, mvals = list_column(table.column(schema.muon_column))
    mean, std = norm.arrays()
    n_in = len(hit_fields)
    feats = np.empty((int(hoff[-1]), n_in + len(frame_fields)), dtype=np.float32)  # [N_hits, F]
    cols = np.empty((n_in, len(feats)), dtype=np.float32)  # [F_in, N_hits]: each field contiguous
    for j, name in enumerate(hit_fields):
        # float32 arithmetic on float32 columns: mm-scale differences survive (|x| < 4e4 mm, ulp < 4 µm)
        np.subtract(hvals[name], mean[j], out=cols[j], casting="unsafe")
        cols[j] /= std[j]
    feats[:, :n_in] = cols.T  # one transposing copy: 4-6x faster than writing each strided column in place
    if frame_fields:
        feats[:, n_in:] = frame_inputs(hoff, hvals, frame_fields, assignment_field)
    link = hvals[LINK_FIELD]
    mnames = schema.names("muon")
    mu = np.empty((int(moff[-1]), len(mnames)), dtype=np.float32)  # [N_muons, K]
    for j, name in enumerate(mnames):
        mu[:, j] = mvals[name]
    row = row_base + np.arange(len(event), dtype=np.int64)
    return Chunk(hoff, feats, link.astype(np.int32, copy=False), moff, mu, event, row)


def frame_inputs(hit_offsets: np.ndarray, hits: dict[str, np.ndarray], frame_fields: Sequence[str],
                 assignment_field: str = LINK_FIELD) -> np.ndarray:
    """Muon-frame inputs ``[N_hits, len(frame_fields)]`` float32 of flat hit columns (dump names)."""
    from ..muon_frame import frame_features

    counts = np.diff(hit_offsets)
    event = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    lo = np.stack([hits[f"spacePoint_globEdgeLow{c}"] for c in "XYZ"], axis=1)
    hi = np.stack([hits[f"spacePoint_globEdgeHigh{c}"] for c in "XYZ"], axis=1)
    return frame_features(hits[assignment_field], event, lo, hi, hits["spacePoint_driftR"],
                          hits["spacePoint_technology"], hits["spacePoint_stationIndex"], list(frame_fields))


# --------------------------------------------------------------------------------------------------
# batches


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
    device-resident path (:mod:`pipeline.train.resident`), so both cut the same batches.
    """
    n = len(n_hits)
    n_full = n if last else (n // batch_size) * batch_size
    if rng is not None and n_full < n:
        perm = rng.permutation(n)
        use, carry = perm[:n_full], perm[n_full:]
    else:
        use, carry = np.arange(n_full), np.arange(n_full, n)
    return [use[b] for b in bucket_batches(n_hits[use], batch_size, rng, width)], carry


# --------------------------------------------------------------------------------------------------
# the iterable dataset


@dataclass(frozen=True)
class Unit:
    """One row group of one shard: the grain of parallelism."""

    shard_index: int
    path: str
    row_group: int
    row_start: int  # first row of the row group within the shard
    events: int  # events of the wanted split in this row group


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


#: One slot's share: ``(unit index, lo, hi)`` = split events ``[lo, hi)`` of that unit (row group).
Segment = tuple[int, int, int]


def deal_events(counts: Sequence[int], world: int, workers: int) -> tuple[list[list[list[Segment]]], int]:
    """Deal the events of units with ``counts`` split events each to ``world`` ranks × ``workers`` workers.

    The units' events, in the order given, form one sequence of ``N = sum(counts)`` positions; it is padded
    to ``ceil(N / world) · world`` by repeating its first events (as ``torch``'s ``DistributedSampler``
    does, wrapping as often as needed), rank ``r`` takes the ``r``-th contiguous block of ``ceil(N / world)``
    positions and splits it into ``workers`` contiguous blocks whose sizes differ by at most one (the
    first ``n % workers`` get one more). Every rank thus has the same per-worker event counts, hence the
    same number of batches (DDP's requirement), and every event appears exactly once per epoch plus the
    padding. Contiguous blocks keep reads whole: a row group is read by at most the slots at its ends.

    Returns ``(slots[rank][worker] = [(unit, lo, hi), ...], padding)``. Loops run over units, not events.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    per_rank = -(-n // world) if n else 0
    padding = per_rank * world - n
    starts = np.concatenate([[0], np.cumsum(counts)])  # [U + 1] first position of each unit

    def segments(a: int, b: int) -> list[Segment]:
        out: list[Segment] = []
        while a < b:
            p = a % n  # padding wraps to the start of the sequence
            stop = p + min(b - a, n - p)
            i = int(np.searchsorted(starts, p, side="right")) - 1
            q = p
            while q < stop:
                hi = min(stop, int(starts[i + 1]))
                out.append((i, q - int(starts[i]), hi - int(starts[i])))
                q, i = hi, i + 1
            a += stop - p
        return out

    slots = []
    for r in range(world):
        sizes = [per_rank // workers + (w < per_rank % workers) for w in range(workers)]
        edges = r * per_rank + np.concatenate([[0], np.cumsum(sizes)])
        slots.append([segments(int(edges[w]), int(edges[w + 1])) for w in range(workers)])
    return slots, padding


class ShardStream(torch.utils.data.IterableDataset):
    """An ``IterableDataset`` of ready-made batches from one split of a dataset.

    The split's events are dealt to (DDP rank, DataLoader worker) slots by :func:`deal_events`: each event
    once per epoch across all ranks and workers, padded with repeated events to equal per-rank counts
    (``padding``, recorded in ``run.json``). The deal is fixed for a run (units in an order drawn from
    ``deal_seed`` when shuffling); each slot re-shuffles its row groups and events every epoch. Use it with
    ``DataLoader(stream, batch_size=None, num_workers=...)``: batching happens here, where the length
    bucketing can see a whole buffer of events. ``rank``/``world_size`` override ``torch.distributed``
    (which is used when initialised: Lightning's DDP).
    """

    def __init__(self, info: DatasetInfo, hit_fields: Sequence[str], norm: Normalisation, split: str, *,
                 batch_size: int, max_muons: int, train_fraction: float, val_fraction: float,
                 split_seed: int = 0, shuffle: bool = False, shuffle_buffer: int = 8192,
                 num_workers: int = 0, frame_fields: Sequence[str] = (),
                 assignment_field: str = LINK_FIELD, bucket_width: int = 0, deal_seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        import pyarrow.parquet as pq

        if split not in SPLITS and split != "all":
            raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)} or 'all'")
        self.info, self.hit_fields, self.norm, self.split = info, list(hit_fields), norm, split
        self.frame_fields, self.assignment_field = list(frame_fields), assignment_field
        self.bucket_width = bucket_width
        self.batch_size, self.max_muons = batch_size, max_muons
        self.fractions = (train_fraction, val_fraction, split_seed)
        self.shuffle, self.shuffle_buffer, self.num_workers = shuffle, max(shuffle_buffer, batch_size), num_workers
        self.columns = ["eventNumber", info.schema.hit_column, info.schema.muon_column]
        self.rank_override = (rank, world_size) if world_size is not None else None
        # Reading eventNumber of every row group up front is cheap (8 bytes per event) and gives exact
        # per-unit event counts, hence an exact len() and equal batch counts across DDP ranks.
        units = []
        for si, path in enumerate(info.shards):
            pf = pq.ParquetFile(path)
            start = 0
            for rg in range(pf.num_row_groups):
                ev = pf.read_row_group(rg, columns=["eventNumber"]).column(0).to_numpy()
                units.append(Unit(si, str(path), rg, start, int(self._keep(ev).sum())))
                start += pf.metadata.row_group(rg).num_rows
        units = [u for u in units if u.events > 0]
        if shuffle:  # a fixed deal for the run (the same on every rank and worker); epochs reshuffle within slots
            units = [units[i] for i in np.random.default_rng(deal_seed).permutation(len(units))]
        self.units = units
        self.epoch_seed: int | None = None

    def _keep(self, event_numbers: np.ndarray) -> np.ndarray:
        if self.split == "all":
            return np.ones(len(event_numbers), dtype=bool)
        tf, vf, seed = self.fractions
        return split_codes(event_numbers, tf, vf, seed) == SPLITS[self.split]

    @property
    def events(self) -> int:
        """Distinct events of the split (each is trained on once per epoch)."""
        return sum(u.events for u in self.units)

    def _rank_world(self) -> tuple[int, int]:
        if self.rank_override is not None:
            rank, world = self.rank_override
            return (rank or 0), world
        return _rank_world()

    def _workers(self) -> int:
        return max(self.num_workers, 1)

    def plan(self, world: int | None = None, workers: int | None = None) -> dict[str, int]:
        """What one epoch holds with ``world`` ranks (default: the current one) of ``workers`` readers each
        (default: ``max(num_workers, 1)``; the device-resident path reads as one): distinct events, padding
        (repeated events), events per rank, per-worker event counts and batches per rank."""
        world = self._rank_world()[1] if world is None else world
        workers = self._workers() if workers is None else workers
        slots, padding = deal_events([u.events for u in self.units], world, workers)
        per_worker = [sum(hi - lo for _, lo, hi in seg) for seg in slots[0]]
        return {"world_size": world, "workers": workers, "events": self.events, "padding": padding,
                "events_per_epoch": self.events + padding, "events_per_rank": sum(per_worker),
                "batches_per_rank": sum(math.ceil(n / self.batch_size) for n in per_worker)}

    def slot(self, rank: int, world: int, worker: int, workers: int) -> list[Segment]:
        """The segments ``(unit, lo, hi)`` dealt to (``rank``, ``worker``), in deal order (:func:`deal_events`)."""
        slots, _ = deal_events([u.events for u in self.units], world, workers)
        return slots[rank][worker]

    def read_segment(self, segment: Segment, cache: dict[str, Any]) -> Chunk:
        """Split events ``[lo, hi)`` of unit ``segment[0]`` as a :class:`Chunk` (``cache``: open files)."""
        u, lo, hi = segment
        chunk = self._read(self.units[u], cache)
        return chunk if (lo, hi) == (0, len(chunk)) else take_events(chunk, np.arange(lo, hi))

    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on every rank)."""
        return self.plan()["batches_per_rank"]

    def _read(self, unit: Unit, cache: dict[str, Any]) -> Chunk:
        import pyarrow.parquet as pq

        pf = cache.get(unit.path)
        if pf is None:
            pf = cache[unit.path] = pq.ParquetFile(unit.path)
        table = pf.read_row_group(unit.row_group, columns=self.columns)
        row_base = (unit.shard_index << 32) + unit.row_start
        keep = self._keep(table.column("eventNumber").to_numpy())
        if not keep.all():  # drop other splits' events before decoding their hits (Arrow's filter, in C++)
            table = table.filter(keep)
        chunk = chunk_from_table(table, self.info.schema, self.hit_fields, self.norm, row_base=row_base,
                                 frame_fields=self.frame_fields, assignment_field=self.assignment_field)
        if not keep.all():
            chunk.row = row_base + np.flatnonzero(keep).astype(np.int64)
        return chunk

    def iter_numpy(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield numpy batches for this (rank, worker): ``ceil(its events / batch_size)`` of them."""
        from ..heap import reuse_freed_memory

        reuse_freed_memory()  # batches and buffers of a few MiB each: no page faults per batch
        rank, world = self._rank_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is None and self.num_workers > 1:
            workers = 1  # iterated directly, without a DataLoader: one process reads everything of its rank
        if info is not None and workers != self._workers():
            raise DatasetError(f"the stream was made for {self._workers()} worker(s) but runs in {workers}")
        segments = self.slot(rank, world, worker, workers)
        rng = None
        if self.shuffle:
            # In a worker the torch RNG is seeded with base_seed + worker id, and base_seed is drawn anew
            # each epoch from the main process's RNG: a fresh, reproducible order every epoch.
            seed = int(torch.randint(0, 2**62, (1,)).item()) if self.epoch_seed is None else self.epoch_seed
            rng = np.random.default_rng(seed)
            segments = [segments[i] for i in rng.permutation(len(segments))]
        cache: dict[str, Any] = {}
        pending: list[Chunk] = []
        held = 0
        for i, segment in enumerate(segments):
            chunk = self.read_segment(segment, cache)
            pending.append(chunk)
            held += len(chunk)
            last = i == len(segments) - 1
            if held < self.shuffle_buffer and not last:
                continue
            buf = concat_chunks(pending)
            batches, carry = cut_buffer(buf.n_hits, last, self.batch_size, rng, self.bucket_width)
            for idx in batches:
                yield collate(buf, idx, self.max_muons)
            pending = [take_events(buf, carry)] if len(carry) else []
            held = len(carry)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.iter_numpy():
            yield {k: torch.from_numpy(v) for k, v in batch.items()}


def make_stream(info: DatasetInfo, hit_fields: Sequence[str], norm: Normalisation, split: str, cfg: Any,
                *, shuffle: bool, num_workers: int | None = None, batch_size: int | None = None) -> ShardStream:
    """A :class:`ShardStream` as a ``TrainConfig`` describes it: its ``data:`` section and its
    muon-frame inputs (``frame_fields`` for the objects of ``assignment_field``)."""
    d = cfg.data
    return ShardStream(info, hit_fields, norm, split, batch_size=batch_size or d.batch_size,
                       max_muons=d.max_muons, train_fraction=d.train_fraction, val_fraction=d.val_fraction,
                       split_seed=d.split_seed, shuffle=shuffle, shuffle_buffer=d.shuffle_buffer,
                       num_workers=d.num_workers if num_workers is None else num_workers,
                       frame_fields=cfg.frame_fields, assignment_field=cfg.assignment_field,
                       bucket_width=d.bucket_width, deal_seed=cfg.trainer.seed)


def make_loader(stream: ShardStream) -> torch.utils.data.DataLoader:
    """A DataLoader over a stream: batches come ready-made (``batch_size=None``), pinned when on CUDA."""
    workers = stream.num_workers
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers and _fork_ok() else None)


def _fork_ok() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def muon_values(info: DatasetInfo, split: str, data_cfg: Any, limit: int = 2_000_000) -> dict[str, np.ndarray]:
    """Truth-muon fields of (up to ``limit`` muons of) one split; for the target scales."""
    import pyarrow.parquet as pq

    out: dict[str, list[np.ndarray]] = {f: [] for f in info.muon_fields}
    n = 0
    for path in info.shards:
        table = pq.read_table(path, columns=["eventNumber", info.schema.muon_column])
        codes = split_codes(table.column("eventNumber").to_numpy(), data_cfg.train_fraction,
                            data_cfg.val_fraction, data_cfg.split_seed)
        muons = table.column(1).combine_chunks()
        counts = np.diff(muons.offsets.to_numpy())
        keep = np.repeat(codes == SPLITS[split], counts)
        values = muons.flatten()
        for f in out:
            out[f].append(values.field(f).to_numpy(zero_copy_only=False)[keep].astype(np.float64))
        n += int(keep.sum())
        if n >= limit:
            break
    return {f: np.concatenate(v) if v else np.zeros(0) for f, v in out.items()}
