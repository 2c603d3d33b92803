"""Scales of the inputs and targets, from the manifest or the shards (numpy and pyarrow, no torch).

:class:`Normalisation` is the per-field ``(x - mean) / std`` of the hit inputs (saved with the model);
:func:`muon_values` reads the truth-muon fields of one split, for the target scales
(:func:`pipeline.train.task.fit_target_scaling`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import DatasetError
from .split import SPLITS, split_codes

if TYPE_CHECKING:
    from ..config import DataConfig
    from .info import TrainingSet


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


def normalisation_for(info: TrainingSet, hit_fields: Sequence[str]) -> Normalisation:
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


def _statistics_from_shard(info: TrainingSet, fields: Sequence[str]) -> dict[str, dict[str, float]]:
    import pyarrow.parquet as pq

    hits = pq.read_table(info.shards[0], columns=[info.schema.hit_column]).column(0).combine_chunks()
    values = hits.flatten()
    out = {}
    for f in fields:
        x = values.field(f).to_numpy().astype(np.float64)
        out[f] = {"mean": float(x.mean()) if x.size else 0.0, "std": float(x.std()) if x.size else 1.0}
    return out


def muon_values(info: TrainingSet, split: str, data_cfg: DataConfig,
                limit: int = 2_000_000) -> dict[str, np.ndarray]:
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
