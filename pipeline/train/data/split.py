"""Which split an event belongs to: a pure function of ``eventNumber`` (numpy only).

Train / val / test membership is a splitmix64 hash of ``eventNumber`` (salted with ``data.split_seed``),
so a split is reproducible across re-conversions, shard layouts and worker counts.
"""

from __future__ import annotations

import numpy as np

#: The split codes :func:`split_codes` returns.
SPLITS = {"train": 0, "val": 1, "test": 2}


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
