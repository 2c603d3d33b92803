"""Shards → ready-made torch batches of one split, with no Python loop per event (the reading job).

:class:`ShardStream` is the ``IterableDataset`` of the streaming loader: it reads the row groups
(:class:`~.deal.RowGroup`) that :func:`~.deal.deal_events` deals to its (DDP rank, DataLoader worker)
slot, in a random order, into a buffer of ``shuffle_buffer`` events (:class:`~.chunks.Chunk`), and cuts
and pads the buffer into batches (:mod:`.batches`). Events that do not fill a whole batch are carried
over to the next buffer, so the number of batches a worker yields is ``ceil(events / batch_size)``
whatever the order; that makes ``len()`` exact and lets DDP ranks agree on a common count.

With :mod:`.resident`, the only module of :mod:`pipeline.train.data` that imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...errors import DatasetError
from .batches import collate, cut_buffer
from .chunks import LINK_FIELD, Chunk, chunk_from_table, concat_chunks, take_events
from .deal import RowGroup, Segment, deal_events
from .epoch import epoch_seed, resume_plan
from .split import SPLITS, split_codes

if TYPE_CHECKING:
    from ..config import TrainConfig
    from .info import TrainingSet
    from .normalise import Normalisation


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardStream(torch.utils.data.IterableDataset):
    """An ``IterableDataset`` of ready-made batches from one split of a dataset.

    The split's events are dealt to (DDP rank, DataLoader worker) slots by :func:`deal_events`: each event
    once per epoch across all ranks and workers, padded with repeated events to equal per-rank counts
    (``padding``, recorded in ``run.json``). The deal is fixed for a run (row groups in an order drawn from
    ``deal_seed`` when shuffling); each slot re-shuffles its row groups and events every epoch. Use it with
    ``DataLoader(stream, batch_size=None, num_workers=...)``: batching happens here, where the length
    bucketing can see a whole buffer of events. ``rank``/``world_size`` override ``torch.distributed``
    (which is used when initialised: Lightning's DDP).
    """

    def __init__(self, info: TrainingSet, hit_fields: Sequence[str], norm: Normalisation, split: str, *,
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
        # per-row-group event counts, hence an exact len() and equal batch counts across DDP ranks.
        groups = []
        for si, path in enumerate(info.shards):
            pf = pq.ParquetFile(path)
            start = 0
            for rg in range(pf.num_row_groups):
                ev = pf.read_row_group(rg, columns=["eventNumber"]).column(0).to_numpy()
                groups.append(RowGroup(si, str(path), rg, start, int(self._keep(ev).sum())))
                start += pf.metadata.row_group(rg).num_rows
        groups = [g for g in groups if g.events > 0]
        if shuffle:  # a fixed deal for the run (the same on every rank and worker); epochs reshuffle within slots
            groups = [groups[i] for i in np.random.default_rng(deal_seed).permutation(len(groups))]
        self.units: list[RowGroup] = groups  # the units of work, in deal order
        self.epoch_seed: int | None = None
        self.seed = deal_seed
        # (epoch, batches of it already trained) as the trainer sets them before each epoch's iterator
        # (:meth:`set_position`), in shared memory so persistent DataLoader workers see them; epoch -1:
        # not set (iterated outside the trainer), the shuffle seed is drawn from torch's RNG
        self._position = torch.tensor([-1, 0], dtype=torch.int64).share_memory_()

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

    def set_position(self, epoch: int, skip: int = 0) -> None:
        """The next iteration is epoch ``epoch`` (its order a function of ``trainer.seed``, the epoch, the
        rank and the reader: :func:`~.epoch.epoch_seed`) without its first ``skip`` batches (a resume)."""
        self._position[0], self._position[1] = int(epoch), int(skip)

    def shuffle_seed(self, rank: int, worker: int) -> int:
        """The seed of this epoch's shuffle for (``rank``, ``worker``): ``epoch_seed`` when given, the
        position's :func:`~.epoch.epoch_seed` when the trainer set one, else a draw from torch's RNG."""
        if self.epoch_seed is not None:
            return self.epoch_seed
        epoch = int(self._position[0])
        if epoch >= 0:
            return epoch_seed(self.seed, epoch, rank, worker)
        return int(torch.randint(0, 2**62, (1,)).item())

    def batches_per_worker(self, rank: int, world: int, workers: int) -> list[int]:
        """Batches each reader of ``rank`` yields in an epoch (``ceil(events / batch_size)`` each)."""
        slots, _ = deal_events([u.events for u in self.units], world, workers)
        return [math.ceil(sum(hi - lo for _, lo, hi in seg) / self.batch_size) for seg in slots[rank]]

    def reader_slot(self, rank: int, world: int, worker: int, workers: int) -> tuple[int, int]:
        """(the reader slot worker ``worker`` serves this epoch, the batches it skips at the start).

        At an epoch's start worker ``j`` serves slot ``j``. Resumed after ``k`` batches, each slot skips its
        share of them and the slots rotate so that worker 0 serves the slot of batch ``k``
        (:func:`~.epoch.resume_plan`): the DataLoader, which always starts at worker 0, then yields the rest
        of the epoch in the uninterrupted order."""
        skip = int(self._position[1])
        if skip <= 0:
            return worker, 0
        skips, first = resume_plan(self.batches_per_worker(rank, world, workers), skip)
        slot = (worker + first) % workers
        return slot, skips[slot]

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
        """The segments ``(row group, lo, hi)`` dealt to (``rank``, ``worker``), in deal order (:func:`deal_events`)."""
        slots, _ = deal_events([u.events for u in self.units], world, workers)
        return slots[rank][worker]

    def read_segment(self, segment: Segment, cache: dict[str, Any]) -> Chunk:
        """Split events ``[lo, hi)`` of row group ``segment[0]`` as a :class:`Chunk` (``cache``: open files)."""
        g, lo, hi = segment
        chunk = self._read(self.units[g], cache)
        return chunk if (lo, hi) == (0, len(chunk)) else take_events(chunk, np.arange(lo, hi))

    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on every rank)."""
        return self.plan()["batches_per_rank"]

    def _read(self, group: RowGroup, cache: dict[str, Any]) -> Chunk:
        import pyarrow.parquet as pq

        pf = cache.get(group.path)
        if pf is None:
            pf = cache[group.path] = pq.ParquetFile(group.path)
        table = pf.read_row_group(group.row_group, columns=self.columns)
        row_base = (group.shard_index << 32) + group.row_start
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
        from ...heap import reuse_freed_memory

        reuse_freed_memory()  # batches and buffers of a few MiB each: no page faults per batch
        rank, world = self._rank_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is None and self.num_workers > 1:
            workers = 1  # iterated directly, without a DataLoader: one process reads everything of its rank
        if info is not None and workers != self._workers():
            raise DatasetError(f"the stream was made for {self._workers()} worker(s) but runs in {workers}")
        worker, skip = self.reader_slot(rank, world, worker, workers)  # skip: batches a resumed epoch trained
        segments = self.slot(rank, world, worker, workers)
        rng = None
        if self.shuffle:
            rng = np.random.default_rng(self.shuffle_seed(rank, worker))
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
                if skip:  # cut like the uninterrupted epoch (the same rng draws), not padded or sent
                    skip -= 1
                    continue
                yield collate(buf, idx, self.max_muons)
            pending = [take_events(buf, carry)] if len(carry) else []
            held = len(carry)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.iter_numpy():
            yield {k: torch.from_numpy(v) for k, v in batch.items()}


def make_stream(info: TrainingSet, hit_fields: Sequence[str], norm: Normalisation, split: str, cfg: TrainConfig,
                *, shuffle: bool, num_workers: int | None = None, batch_size: int | None = None) -> ShardStream:
    """A :class:`ShardStream` as a ``TrainConfig`` describes it: its ``data:`` section and its
    muon-frame inputs (``frame_fields`` for the objects of ``assignment_field``)."""
    from ..task_config import label_max_muons  # the hit filter: no muon cap

    d = cfg.data
    return ShardStream(info, hit_fields, norm, split, batch_size=batch_size or d.batch_size,
                       max_muons=label_max_muons(cfg), train_fraction=d.train_fraction, val_fraction=d.val_fraction,
                       split_seed=d.split_seed, shuffle=shuffle, shuffle_buffer=d.shuffle_buffer,
                       num_workers=d.num_workers if num_workers is None else num_workers,
                       frame_fields=cfg.frame_fields, assignment_field=cfg.assignment_field,
                       bucket_width=d.bucket_width, deal_seed=cfg.trainer.seed)


class EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader that tells its dataset where the epoch it starts is, before each iteration.

    ``position``: a callable returning ``(epoch, batches already trained in it)``, read when an epoch's
    iterator is made (the trainer's loop state: 0 batches at an epoch's start, ``k`` when a run resumes
    from a checkpoint written after batch ``k``). The dataset (:class:`ShardStream` or a resident
    stream) then yields that epoch's batches from ``k`` on, in the uninterrupted order.
    """

    position: Any = None

    def __iter__(self) -> Any:
        if self.position is not None:
            self.dataset.set_position(*self.position())
        return super().__iter__()

    # Lightning's stateful-loader protocol: the position lives in the loop state the checkpoint already
    # holds (read by ``position``), so there is nothing more to save; declaring it tells Lightning that a
    # mid-epoch resume continues the epoch (no "dataloader is not resumable" warning).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def make_loader(stream: ShardStream) -> EpochLoader:
    """A DataLoader over a stream: batches come ready-made (``batch_size=None``), pinned when on CUDA."""
    workers = stream.num_workers
    return EpochLoader(  # workers leave stop signals to the trainer (see _worker_init)
        stream, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers and _fork_ok() else None,
        worker_init_fn=_worker_init if workers else None)


def _worker_init(worker_id: int) -> None:
    """A DataLoader worker ignores SIGINT / SIGTERM / SIGUSR1: a Ctrl-C or a batch system's SIGTERM reaches
    the whole process group, and the trainer stops cleanly (checkpoint, exit 128 + N) only if its workers
    are still there to finish the step. The order of the batches does not use the workers' RNG."""
    from ...signals import ignore_stop_signals

    ignore_stop_signals()


def _fork_ok() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()
