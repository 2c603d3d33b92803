"""A device-resident split: load once as flat tensors + offsets, cut and pad batches on the device.

When the selected columns of a split fit in device memory (:func:`fits`), the events the streaming
loader deals to this DDP rank (:meth:`ShardStream.slot` of one reader per rank, i.e. ``num_workers: 0``:
every event of the split once per epoch across ranks, plus the recorded padding) are read once, through
the streaming loader's own reader (:meth:`ShardStream.read_segment`: normalisation, muon-frame inputs,
split filter), into one :class:`~pipeline.train.data.chunks.Chunk`, and its arrays are copied to the device
(pinned host memory → device on CUDA)::

    hits        [N_hits, F]   float32   normalised inputs + muon-frame inputs (computed once, at load)
    link        [N_hits]      int64     -1 where the streaming collate makes it -1 (clip_links: once, at load)
    hit_offsets [E + 1]       int64     (and muon_offsets [E + 1], muons [N_muons, K], event, row [E])

An epoch's batches (which events go into which batch) are the streaming loader's, computed by the same
code (:func:`~pipeline.train.data.batches.cut_buffer`) on the per-event hit counts only: segment order,
shuffle buffer, carry-over, length bucketing, batch order. It costs a few numpy operations on ``E``
integers per epoch and is uploaded in one copy. A step then gathers and pads its batch with a handful
of device kernels (:func:`collate_tensors`), with no worker process and no host copy. For the same
epoch seed the batches equal those of the streaming loader read by one process or one worker per rank;
in the trainer (the seed drawn from torch's global RNG) they equal those of ``num_workers: 0`` for the
same ``trainer.seed``, and an epoch has ``ShardStream.plan(world, workers=1)["batches_per_rank"]`` steps.
``tests/test_train_resident.py`` checks both on CPU, for one rank and for each of two ranks.

Memory rule (:func:`fits`): the split's flat tensors may take at most ``data.resident_fraction``
(default 0.5) of the device's free memory, the rest is left to the model, the optimiser, the
activations and the padded batches. Where a split does not fit, the streaming loader is used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError
from .batches import clip_links, cut_buffer
from .chunks import Chunk, concat_chunks
from .deal import Segment
from .stream import EpochLoader, ShardStream

MODES = ("auto", "on", "off")


# --------------------------------------------------------------------------------------------------
# memory rule


def split_bytes(stream: ShardStream) -> int:
    """Bytes the split of ``stream`` takes as flat tensors, estimated from the manifest before loading.

    Hits and muons are scaled from the dataset totals by the split's share of events (the split is a
    hash of ``eventNumber``, so the share of hits is the share of events up to sampling noise).
    """
    shards = stream.info.manifest.get("shards", [])
    total_events = sum(int(s.get("rows", 0)) for s in shards) or 1
    share = stream.events / total_events
    hits = sum(int(s.get("hits", 0)) for s in shards) * share
    muons = sum(int(s.get("muons", 0)) for s in shards) * share
    features = len(stream.hit_fields) + len(stream.frame_fields)
    per_hit = 4 * features + 8  # float32 features + int64 link
    per_muon = 4 * len(stream.info.muon_fields)
    per_event = 8 * 4  # two offsets, eventNumber, row id
    return int(math.ceil(hits * per_hit + muons * per_muon + stream.events * per_event))


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device``: ``cudaMemGetInfo`` on CUDA, ``MemAvailable`` of the host otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def fits(stream: ShardStream, device: torch.device, fraction: float = 0.5) -> tuple[bool, int, int]:
    """(fits, bytes needed, bytes allowed): the split fits if it needs at most ``fraction`` of free memory."""
    need, allowed = split_bytes(stream), int(free_bytes(device) * fraction)
    return need <= allowed, need, allowed


def use_resident(mode: str, stream: ShardStream, device: torch.device, fraction: float = 0.5) -> bool:
    """``data.resident``: ``on`` (always; raises if the split does not fit), ``off``, ``auto`` (if it fits)."""
    if mode not in MODES:
        raise ConfigError(f"data.resident: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return False
    ok, need, allowed = fits(stream, device, fraction)
    if mode == "on" and not ok:
        raise ConfigError(f"data.resident: on, but the {stream.split} split needs {need / 2**30:.2f} GiB and "
                          f"{fraction:.0%} of the free memory of {device} is {allowed / 2**30:.2f} GiB; "
                          "use data.resident: auto (streams what does not fit) or off")
    return ok


# --------------------------------------------------------------------------------------------------
# the resident store and batches


@dataclass
class Resident:
    """A split as flat tensors on one device (see the module docstring for shapes).

    ``hits_pad``/``link_pad``/``muons_pad`` carry one padding row at the end (zeros, link −1): a
    padded position gathers that row, so a batch is one gather per tensor, with no masking pass.
    """

    hit_offsets: Tensor
    hits_pad: Tensor  # [N_hits + 1, F]
    link_pad: Tensor  # [N_hits + 1] int64
    muon_offsets: Tensor
    muons_pad: Tensor  # [N_muons + 1, K]
    event: Tensor
    row: Tensor
    n_hits: np.ndarray  # [E] host copy: the plan and the padded lengths need no device sync
    n_muons: np.ndarray  # [E] host copy

    @classmethod
    def from_chunk(cls, chunk: Chunk, device: torch.device, max_muons: int) -> Resident:
        """``chunk`` on ``device``; links of muons beyond ``max_muons`` already -1 (:func:`clip_links`)."""
        pin = device.type == "cuda"

        def up(a: np.ndarray, pad: float | None = None) -> Tensor:
            if pad is not None:  # one padding row, appended while copying into the (pinned) staging buffer
                a = np.concatenate([a, np.full((1, *a.shape[1:]), pad, dtype=a.dtype)])
            if not a.flags.writeable:  # an Arrow view (offsets of a whole row group): torch wants its own
                a = a.copy()
            t = torch.from_numpy(np.ascontiguousarray(a))
            return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

        return cls(up(chunk.hit_offsets), up(chunk.hits, 0.0), up(clip_links(chunk, max_muons), -1),
                   up(chunk.muon_offsets), up(chunk.muons, 0.0), up(chunk.event), up(chunk.row),
                   np.diff(chunk.hit_offsets), np.diff(chunk.muon_offsets))

    @property
    def hits(self) -> Tensor:  # [N_hits, F]
        return self.hits_pad[:-1]

    @property
    def link(self) -> Tensor:  # [N_hits]
        return self.link_pad[:-1]

    @property
    def muons(self) -> Tensor:  # [N_muons, K]
        return self.muons_pad[:-1]

    def __len__(self) -> int:
        return len(self.n_hits)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.hit_offsets, self.hits_pad, self.link_pad,
                                                         self.muon_offsets, self.muons_pad, self.event, self.row))


def collate_tensors(store: Resident, idx: Tensor, L: int, M: int, max_muons: int) -> dict[str, Tensor]:
    """Events ``idx`` [B] (device int64) of ``store`` padded to ``L`` hits and ``M`` muons, on the device.

    The same dict as :func:`pipeline.train.data.batches.collate` (``hits`` [B, L, F] float32, ``hit_mask``
    [B, L] bool, ``link`` [B, L] int64, ``muons`` [B, M, K], ``muon_mask`` [B, M], ``event``, ``row``
    [B] int64); ``L``/``M`` come from the host copies of the counts, so no device sync is needed.
    """
    return _pad(store, _per_event(store, idx, max_muons), L, M)


def _per_event(store: Resident, idx: Tensor, max_muons: int) -> tuple[Tensor, ...]:
    """(hit start, hit count, muon start, muon count ≤ ``max_muons``, eventNumber, row) of events ``idx``."""
    starts, mstarts = store.hit_offsets[idx], store.muon_offsets[idx]
    return (starts, store.hit_offsets[idx + 1] - starts, mstarts,
            torch.clamp(store.muon_offsets[idx + 1] - mstarts, max=max_muons), store.event[idx], store.row[idx])


def _pad(store: Resident, ev: tuple[Tensor, ...], L: int, M: int) -> dict[str, Tensor]:
    starts, lens, mstarts, mlens, event, row = ev  # [B] each
    dev = store.hits_pad.device
    ar = torch.arange(L, device=dev)
    hit_mask = ar[None, :] < lens[:, None]  # [B, L]
    pos = torch.where(hit_mask, starts[:, None] + ar[None, :], store.hits_pad.shape[0] - 1)  # padding row
    B, flat = pos.shape[0], pos.reshape(-1)
    # index_select on the flat positions: 2x faster than advanced indexing on CPU, and one kernel on CUDA
    hits = torch.index_select(store.hits_pad, 0, flat).view(B, L, -1)  # [B, L, F]
    link = torch.index_select(store.link_pad, 0, flat).view(B, L)  # [B, L], clipped at load
    mar = torch.arange(M, device=dev)
    muon_mask = mar[None, :] < mlens[:, None]  # [B, M]
    mpos = torch.where(muon_mask, mstarts[:, None] + mar[None, :], store.muons_pad.shape[0] - 1)
    muons = torch.index_select(store.muons_pad, 0, mpos.reshape(-1)).view(B, M, -1)  # [B, M, K]
    return {"hits": hits, "hit_mask": hit_mask, "link": link, "muons": muons, "muon_mask": muon_mask,
            "event": event, "row": row}


class ResidentStream(torch.utils.data.IterableDataset):
    """The batches of a :class:`ShardStream`, cut from a device-resident copy of its split.

    Loading happens at the first iteration (then DDP's rank is known; each rank loads only the events
    dealt to it, as one reader). Use with ``DataLoader(..., batch_size=None, num_workers=0)`` (:func:`make_resident_loader`).
    """

    def __init__(self, stream: ShardStream, device: torch.device | str | None = None) -> None:
        self.stream = stream
        self.device = torch.device(device) if device is not None else None
        self._store: Resident | None = None
        self._segment_events: list[np.ndarray] = []  # store positions of each dealt segment
        self._key: tuple[int, int, str] | None = None
        self.epoch_seed: int | None = None
        self.load_seconds = 0.0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        """As :meth:`ShardStream.set_position`: this path reads as reader 0 of 1 per rank."""
        self.stream.set_position(epoch, skip)

    # the streaming loader's bookkeeping, for len() and the split
    @property
    def events(self) -> int:
        return self.stream.events

    @property
    def batch_size(self) -> int:
        return self.stream.batch_size

    def plan(self, world: int | None = None) -> dict[str, int]:
        """The epoch's deal (:meth:`ShardStream.plan`) as this path reads it: one reader per rank."""
        return self.stream.plan(world, workers=1)

    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on every rank)."""
        return self.plan()["batches_per_rank"]

    def _device(self) -> torch.device:
        if self.device is not None:
            return self.device
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def load(self) -> Resident:
        """Read the events dealt to this rank once (cached) and put them on the device."""
        import time

        rank, world = self.stream._rank_world()
        device = self._device()
        key = (rank, world, str(device))
        if self._store is not None and self._key == key:
            return self._store
        t0 = time.perf_counter()
        if device.type == "cpu":
            from ...heap import reuse_freed_memory

            reuse_freed_memory()  # each padded batch is a few MiB: reuse freed heap, no page faults
        segments: list[Segment] = self.stream.slot(rank, world, 0, 1)
        cache: dict[str, Any] = {}
        chunks = [self.stream.read_segment(seg, cache) for seg in segments]
        bounds = np.cumsum([0] + [len(c) for c in chunks])
        self._segment_events = [np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i in range(len(chunks))]
        host = concat_chunks(chunks) if chunks else _empty_chunk(self.stream)
        del chunks
        self._store = Resident.from_chunk(host, device, self.stream.max_muons)
        self._key = key
        self.load_seconds = time.perf_counter() - t0
        return self._store

    def epoch_batches(self, rng: np.random.Generator | None) -> list[np.ndarray]:
        """The epoch's batches as event positions in the store, exactly as :meth:`ShardStream.iter_numpy` cuts them."""
        s, store = self.stream, self._store
        assert store is not None
        order = list(range(len(self._segment_events)))
        if rng is not None:
            order = [order[i] for i in rng.permutation(len(order))]
        out: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        held = 0
        for i, k in enumerate(order):
            pending.append(self._segment_events[k])
            held += len(self._segment_events[k])
            last = i == len(order) - 1
            if held < s.shuffle_buffer and not last:
                continue
            buf = np.concatenate(pending)
            batches, carry = cut_buffer(store.n_hits[buf], last, s.batch_size, rng, s.bucket_width)
            out.extend(buf[idx] for idx in batches)
            pending = [buf[carry]] if len(carry) else []
            held = len(carry)
        return out

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        store = self.load()
        rng = None
        rank, world = self.stream._rank_world()
        if self.stream.shuffle:
            seed = self.epoch_seed if self.epoch_seed is not None else self.stream.shuffle_seed(rank, 0)
            rng = np.random.default_rng(seed)
        batches = self.epoch_batches(rng)
        batches = batches[self.stream.reader_slot(rank, world, 0, 1)[1]:]  # a resumed epoch: the rest of it
        if not batches:
            return
        # The whole epoch's indices in one host → device copy, and the per-event quantities gathered once
        # per epoch; a batch takes slices (views) of them. Padded lengths per batch from the host counts.
        order = np.concatenate(batches)
        max_muons = self.stream.max_muons
        ev = _per_event(store, torch.from_numpy(order).to(store.hits_pad.device), max_muons)
        bounds = np.cumsum([0] + [len(b) for b in batches])
        Ls = np.maximum(np.maximum.reduceat(store.n_hits[order], bounds[:-1]), 1)
        Ms = np.maximum(np.maximum.reduceat(np.minimum(store.n_muons[order], max_muons), bounds[:-1]), 1)
        for i in range(len(batches)):
            lo, hi = bounds[i], bounds[i + 1]
            yield _pad(store, tuple(t[lo:hi] for t in ev), int(Ls[i]), int(Ms[i]))


def _empty_chunk(stream: ShardStream) -> Chunk:
    F = len(stream.hit_fields) + len(stream.frame_fields)
    z = np.zeros(1, dtype=np.int64)
    return Chunk(z, np.zeros((0, F), np.float32), np.zeros(0, np.int32), z.copy(),
                 np.zeros((0, len(stream.info.muon_fields)), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))


def make_resident_loader(stream: ResidentStream) -> EpochLoader:
    """A DataLoader that only iterates (batches are made, and live, on the device)."""
    return EpochLoader(stream, batch_size=None, num_workers=0, pin_memory=False,
                                       collate_fn=_as_made)


def _as_made(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch as :func:`collate_tensors` made it (the default ``default_convert`` walks the dict: ~5 %
    of a resident step on CPU)."""
    return batch
