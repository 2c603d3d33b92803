"""Where an epoch is: the order of its batches as a pure function of (seed, epoch, rank, worker), and
which batches of it were already trained, so a resumed run continues the same epoch (numpy only).

* :func:`epoch_seed`: the seed of one (rank, reader) slot's shuffle in one epoch, from the run's
  ``trainer.seed``. It depends on nothing else (not on torch's global RNG, which a resumed process
  does not share with the run it continues), so epoch ``e`` is the same batches whether the run got
  there uninterrupted or through any number of resumes.
* :func:`resume_plan`: a ``DataLoader`` with ``W`` workers hands out their batches round-robin in
  worker order (worker 0, 1, …, W-1, then 0 again; a worker with no batch left drops out), starting
  at worker 0 every epoch. From the number of batches each reader slot yields, the first ``k`` batches
  of the epoch are therefore known per slot, and so is the slot of batch ``k``. On resume each slot
  skips its share, and the workers take the slots rotated so that worker 0 serves the slot of batch
  ``k``: the loader's round-robin then continues the uninterrupted one exactly.
"""

from __future__ import annotations

import numpy as np


def epoch_seed(seed: int, epoch: int, rank: int, worker: int) -> int:
    """A 62-bit seed for the shuffle of (``rank``, ``worker``) in ``epoch`` of a run seeded ``seed``."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(epoch), int(rank), int(worker)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(2))


def worker_skips(batches: list[int], skip: int) -> list[int]:
    """Batches of each slot among the first ``skip`` batches a round-robin ``DataLoader`` yields.

    ``batches[j]``: the batches slot ``j`` yields in the epoch. Raises ValueError when ``skip`` is
    more than the epoch holds.
    """
    return resume_plan(batches, skip)[0]


def resume_plan(batches: list[int], skip: int) -> tuple[list[int], int]:
    """(batches each slot skips, the slot of the next batch) after the first ``skip`` batches of an epoch
    whose slots yield ``batches[j]`` batches each, handed out round-robin (see the module docstring).

    The next slot is 0 when nothing is left. Raises ValueError when ``skip`` is more than the epoch holds.
    """
    if skip > sum(batches):
        raise ValueError(f"cannot skip {skip} batches of an epoch of {sum(batches)}")
    out = [0] * len(batches)
    left, rnd = skip, 0
    while True:
        for j, n in enumerate(batches):
            if n > rnd:
                if left == 0:
                    return out, j
                out[j] += 1
                left -= 1
        rnd += 1
        if rnd >= max(batches, default=0):
            return out, 0
