"""``evaluate`` of a hit-filter run: per-hit scores of one split → metrics.json and plots.

Scores come from the same code as ``predict`` (:func:`~.predict.scored_row_groups`): the run's inputs and
normalisation, every hit of every event. Each hit's truth (link >= 0), technology and |η| (of the middle
of its strip or tube) are read from the same row group of the parent shard, so all columns are aligned
by construction. Metrics: :func:`~.hitmetrics.hit_filter_metrics` (AUC, working points, muon survival,
per technology and per region); plots: :mod:`.hitplots`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..selection import TECHNOLOGIES
from .hitmetrics import hit_filter_metrics
from .metrics import REGIONS
from .predict import leaf_paths

TECHNOLOGY_NAMES = {code: name for name, code in TECHNOLOGIES.items()}


def hit_eta(hits: dict[str, np.ndarray]) -> np.ndarray:
    """Pseudorapidity [N] of the middle of each hit's strip or tube (the mean of its two edge points)."""
    x, y, z = ((hits[f"spacePoint_globEdgeLow{c}"].astype(np.float64) + hits[f"spacePoint_globEdgeHigh{c}"]) / 2
               for c in "XYZ")
    return np.arcsinh(z / np.maximum(np.hypot(x, y), 1e-9))


#: The hit fields the per-technology and per-region tables need (read alone, not the whole hit list).
TRUTH_FIELDS = ("spacePoint_technology", *(f"spacePoint_globEdge{e}{c}" for e in ("Low", "High") for c in "XYZ"))


def _truth_columns(stream: Any, unit: Any, cache: dict[str, Any]) -> dict[str, np.ndarray]:
    """Technology [N] and η [N] of the split's hits of one row group, in the chunk's hit order."""
    import pyarrow.parquet as pq

    from ..shards import list_column

    key = f"raw:{unit.path}"
    if key not in cache:
        cache[key] = pq.ParquetFile(unit.path)
    pf = cache[key]
    leaves = leaf_paths(pf, stream.info.schema.hit_column, TRUTH_FIELDS, unit.path)
    table = pf.read_row_group(unit.row_group, columns=["eventNumber", *leaves])
    keep = stream._keep(table.column("eventNumber").to_numpy())
    if not keep.all():
        table = table.filter(keep)
    _, hits = list_column(table.column(stream.info.schema.hit_column))
    return {"technology": np.asarray(hits["spacePoint_technology"], dtype=np.int64), "eta": hit_eta(hits)}


def collect(run_dir: str | Path, data_dir: str | Path, split: str, device: str | None,
            batch_size: int | None = None) -> tuple[dict[str, np.ndarray], int, dict[str, Any]]:
    """(per-hit columns score, label, muon_id, technology, eta; events; meta) of one split."""
    from .predict import load_hit_filter, open_split, prepare_model, scored_row_groups  # torch: at use

    module, ckpt = load_hit_filter(run_dir)
    info, stream = open_split(module, data_dir, split, batch_size)
    if stream.events == 0:
        raise DatasetError(f"{data_dir}: the {split} split is empty")
    model, dev = prepare_model(module, device)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("score", "label", "muon_id", "technology", "eta")}
    events, cache = 0, {}
    for unit, chunk, flat in scored_row_groups(model, stream, dev, cache=cache):
        truth = _truth_columns(stream, unit, cache)
        if len(truth["eta"]) != len(flat):
            raise DatasetError(f"{unit.path}: row group {unit.row_group} changed while it was read")
        event_index = events + np.repeat(np.arange(len(chunk)), chunk.n_hits)  # [N]
        link = chunk.link.astype(np.int64)
        cols["score"].append(flat)
        cols["label"].append(link >= 0)
        cols["muon_id"].append(np.where(link >= 0, event_index * 4096 + np.clip(link, 0, 4095), -1))
        cols["technology"].append(truth["technology"])
        cols["eta"].append(truth["eta"])
        events += len(chunk)
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    return columns, events, {"checkpoint": str(ckpt), "split": split, "info": info,
                             "attention": module.cfg.attention.kind}


def groups_of(columns: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Boolean masks per technology (names of ``pipeline.selection.TECHNOLOGIES``) and per |η| region."""
    tech = {TECHNOLOGY_NAMES.get(int(c), str(int(c))): columns["technology"] == c
            for c in np.unique(columns["technology"])}
    abs_eta = np.abs(columns["eta"])
    region = {name: (abs_eta >= lo) & (abs_eta < hi) for name, (lo, hi) in REGIONS.items()}
    return {"technology": tech, "region": region}


def evaluate_hit_filter(run_dir: str | Path, data_dir: str | Path, output: str | Path | None = None, *,
                        split: str = "test", device: str | None = None, plots: bool = True,
                        quiet: bool = True) -> dict[str, Any]:
    """Score ``split``, compute the metrics, write ``metrics.json`` (and PNGs) under ``output``
    (default RUN_DIR/eval); return the metrics plus ``output`` and ``written``."""
    from .runfiles import evaluation_folder, find_checkpoint, finite

    run_dir = Path(run_dir)
    out_dir = Path(output) if output is not None else run_dir / "eval"
    t0 = time.perf_counter()
    if not quiet:
        print(f"evaluate: scoring the hits of the {split} split of {data_dir} with {find_checkpoint(run_dir)}",
              file=sys.stderr, flush=True)
    columns, events, meta = collect(run_dir, data_dir, split, device)
    seconds = time.perf_counter() - t0
    info = meta.pop("info")
    metrics = {"task": "hit_filter", "run": str(run_dir.resolve()), "data": str(Path(data_dir).resolve()),
               "label": run_dir.name, **meta, "dataset_id": info.manifest.get("dataset_id", ""),
               "regions": {k: list(v) for k, v in REGIONS.items()}, "score_seconds": seconds,
               **hit_filter_metrics(columns["score"], columns["label"], columns["muon_id"], events,
                                    groups_of(columns))}
    evaluation_folder(out_dir)  # only now: a failed evaluation leaves the earlier one as it was
    (out_dir / "metrics.json").write_text(json.dumps(finite(metrics), indent=2))
    written = ["metrics.json"]
    if plots:
        from .hitplots import plot_hit_filter

        written += [p.name for p in plot_hit_filter(columns, metrics, out_dir)]
    return {**metrics, "output": str(out_dir), "written": written}
