"""Which events each (DDP rank, DataLoader worker) slot reads: the deal of row groups (pure, no I/O).

Like a sampler, it only yields positions (``(row group, lo, hi)`` segments), so it is numpy only and
testable without torch or files; :mod:`.stream` reads what it deals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowGroup:
    """One row group of one shard: the grain of parallelism (the unit the deal hands out)."""

    shard_index: int
    path: str
    row_group: int
    row_start: int  # first row of the row group within the shard
    events: int  # events of the wanted split in this row group


#: One slot's share: ``(row group index, lo, hi)`` = split events ``[lo, hi)`` of that row group.
Segment = tuple[int, int, int]


def deal_events(counts: Sequence[int], world: int, workers: int) -> tuple[list[list[list[Segment]]], int]:
    """Deal the events of row groups with ``counts`` split events each to ``world`` ranks × ``workers`` workers.

    The row groups' events, in the order given, form one sequence of ``N = sum(counts)`` positions; it is padded
    to ``ceil(N / world) · world`` by repeating its first events (as ``torch``'s ``DistributedSampler``
    does, wrapping as often as needed), rank ``r`` takes the ``r``-th contiguous block of ``ceil(N / world)``
    positions and splits it into ``workers`` contiguous blocks whose sizes differ by at most one (the
    first ``n % workers`` get one more). Every rank thus has the same per-worker event counts, hence the
    same number of batches (DDP's requirement), and every event appears exactly once per epoch plus the
    padding. Contiguous blocks keep reads whole: a row group is read by at most the slots at its ends.

    Returns ``(slots[rank][worker] = [(row group, lo, hi), ...], padding)``. Loops run over row groups, not
    events.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    per_rank = -(-n // world) if n else 0
    padding = per_rank * world - n
    starts = np.concatenate([[0], np.cumsum(counts)])  # [U + 1] first position of each row group

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
