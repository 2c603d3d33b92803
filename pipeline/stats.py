"""Streaming, mergeable per-feature statistics (count, mean, M2, min, max).

Shards are written by many workers; the trainer needs one mean/std per feature to normalise.
Each chunk contributes exact float64 moments and partial results merge with Chan et al.'s
pairwise update, so statistics of a dataset never require a second pass over the data. Merging
in a fixed (unit) order keeps the manifest identical whatever the executor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class RunningStats:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> RunningStats:
        values = np.asarray(values)
        if values.size == 0:
            return cls()
        mean = float(values.sum(dtype=np.float64)) / values.size
        d = values - np.float64(mean)  # float64 deviations; m2 with einsum: one pass, and no BLAS
        # threads (np.dot would start a pool per process and slow parallel workers down)
        return cls(count=int(values.size), mean=mean, m2=float(np.einsum("i,i->", d, d)),
                   min=float(values.min()), max=float(values.max()))

    def merge(self, other: RunningStats) -> RunningStats:
        if other.count == 0:
            return RunningStats(**self.to_dict(full=False))
        if self.count == 0:
            return RunningStats(**other.to_dict(full=False))
        n = self.count + other.count
        delta = other.mean - self.mean
        return RunningStats(
            count=n,
            mean=self.mean + delta * other.count / n,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    def to_dict(self, full: bool = True) -> dict[str, float]:
        d = {"count": self.count, "mean": self.mean, "m2": self.m2, "min": self.min, "max": self.max}
        if full:
            d["std"] = self.std
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunningStats:
        return cls(count=int(d["count"]), mean=float(d["mean"]), m2=float(d["m2"]),
                   min=float(d["min"]), max=float(d["max"]))


StatsTable = dict[str, dict[str, RunningStats]]  # column ("hits", "truthMuons") -> field -> stats


def merge_tables(a: StatsTable, b: StatsTable) -> StatsTable:
    out: StatsTable = {}
    for col in list(a) + [c for c in b if c not in a]:
        fa, fb = a.get(col, {}), b.get(col, {})
        out[col] = {f: fa.get(f, RunningStats()).merge(fb.get(f, RunningStats()))
                    for f in list(fa) + [f for f in fb if f not in fa]}
    return out


def table_to_json(t: StatsTable) -> dict:
    return {col: {f: s.to_dict() for f, s in fields.items()} for col, fields in t.items()}


def table_from_json(d: dict) -> StatsTable:
    return {col: {f: RunningStats.from_dict(s) for f, s in fields.items()} for col, fields in d.items()}
