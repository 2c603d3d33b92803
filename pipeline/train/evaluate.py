"""``muon-pipeline evaluate``: a trained run + a dataset → predictions, metrics.json and plots.

The checkpoint carries the hit fields, normalisation and target scaling, so the evaluated inputs are
prepared exactly as in training. The classical track fit of the simulator
(``pipeline.simulate.fit.fit_tracks``) is run on the same events as the baseline where it is installed;
without it the network is evaluated alone and ``metrics.json`` says why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .metrics import PT_BINS, REGIONS, evaluate_method
from .runfiles import evaluation_folder, find_checkpoint, load_module
from .runfiles import finite as _finite

__all__ = ["evaluate", "predict", "calibrate_run", "find_checkpoint", "load_module", "add_baseline", "sample_identity"]

#: What the classical fit gives per muon, as ``fit_<name>`` columns (σ(q/pT) in GeV⁻¹).
FIT_COLUMNS = ("pt", "q", "eta", "phi", "sigma_qpt")
TRUTH = {"truthMuon_pt": "true_pt", "truthMuon_eta": "true_eta", "truthMuon_phi": "true_phi",
         "truthMuon_q": "true_q"}


def predict(run_dir: str | Path, data_dir: str | Path, split: str = "test", device: str | None = None,
            batch_size: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-muon truth and prediction columns for one split (numpy, one entry per truth muon): ``true_*``,
    ``pred_*`` (pT in GeV) and, with an uncertainty head, ``pred_sigma_pt`` (GeV), ``pred_sigma_qpt``
    (GeV⁻¹), ``pred_sigma_eta``, ``pred_sigma_phi`` (rad).

    ``device``: ``auto`` (default), ``cpu`` or ``gpu``. Holds the dataset's readers' lock while it reads."""
    from ..locks import reading

    with reading(str(data_dir), "evaluate"):
        return _predict(run_dir, data_dir, split, device, batch_size)


def _predict(run_dir: str | Path, data_dir: str | Path, split: str, device: str | None,
             batch_size: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import torch

    from .config import check_against_schema
    from .data import Normalisation, open_training_set
    from .data.stream import make_loader, make_stream

    run_dir = Path(run_dir)
    ckpt = find_checkpoint(run_dir)
    module = load_module(ckpt)
    cfg, hp = module.cfg, module.hparams
    info = open_training_set(data_dir, verify_checksums=cfg.data.verify_checksums)
    check_against_schema(cfg, info.schema)  # eta on a v1 dataset: the migrate hint, not a KeyError
    if list(hp.muon_fields) != info.muon_fields:
        raise DatasetError(f"{data_dir}: truth-muon fields {info.muon_fields} differ from the run's {hp.muon_fields}")
    norm = Normalisation.from_dict(hp.normalisation)
    stream = make_stream(info, list(hp.hit_fields), norm, split, cfg, shuffle=False,
                         batch_size=batch_size or cfg.data.batch_size)
    if stream.events == 0:
        raise DatasetError(f"{data_dir}: the {split} split is empty")
    from .device import normalise, torch_device

    device = torch_device(normalise(device))  # auto / cpu / gpu; gpu without one: a one-line error
    model = module.model.to(device).eval()
    # bf16 for the encoder on GPU, as in training; the task's predict() works in float32 regardless.
    autocast = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    muon_fields = list(hp.muon_fields)
    cols: dict[str, list[np.ndarray]] = {}

    def add(name: str, value: np.ndarray) -> None:
        cols.setdefault(name, []).append(value)

    with torch.inference_mode():
        for batch in make_loader(stream):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
                out = model(batch)  # [B, M, T]
            preds = model.task.predict(out)  # each [B, M], float32
            mask = batch["muon_mask"]  # [B, M]
            B, M = mask.shape
            slots = torch.arange(M, device=device)
            n_hits = (batch["link"].unsqueeze(1) == slots.view(1, M, 1)).sum(-1)  # [B, M]
            add("row", batch["row"].unsqueeze(1).expand(B, M)[mask].cpu().numpy())
            add("eventNumber", batch["event"].unsqueeze(1).expand(B, M)[mask].cpu().numpy())
            add("muon", slots.unsqueeze(0).expand(B, M)[mask].cpu().numpy())
            add("n_hits", n_hits[mask].cpu().numpy())
            for field, name in TRUTH.items():
                add(name, batch["muons"][..., muon_fields.index(field)][mask].float().cpu().numpy())
            for field, value in preds.items():
                add("pred_" + field.removeprefix("truthMuon_"), value[mask].float().cpu().numpy())
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    columns["true_q"] = columns["true_q"].astype(np.int32)
    order = np.lexsort((columns["muon"], columns["row"]))
    columns = {k: v[order] for k, v in columns.items()}
    meta = {"checkpoint": str(ckpt), "split": split, "fields": cfg.fields, "inverse_fields": cfg.inverse_fields,
            "uncertainty": cfg.uncertainty,
            "signed_curvature": cfg.signed_curvature, "hit_fields": list(hp.hit_fields), "info": info}
    return columns, meta


def calibrate_run(run_dir: str | Path, data_dir: str | Path, split: str = "val", device: str | None = None,
                  min_cell: int | None = None) -> dict[str, Any]:
    """Predict ``split`` of ``data_dir`` with the run's checkpoint and write ``RUN/calibration.json``
    from it (:func:`.calibrate.write_calibration`); return what was written."""
    from .calibrate import check_calibratable, write_calibration
    from .calibration import MIN_CELL

    check_calibratable(run_dir)  # before the prediction: a run without widths, a read-only folder
    columns, meta = predict(run_dir, data_dir, split=split, device=device)
    info = meta.pop("info")
    source = {"data": str(Path(data_dir).resolve()), **sample_identity(info.manifest, columns), "split": split}
    return write_calibration(run_dir, columns, meta["checkpoint"], source,
                             MIN_CELL if min_cell is None else min_cell)


def add_baseline(columns: dict[str, np.ndarray], info: Any) -> str:
    """Add ``fit_pt/q/eta/phi/sigma_qpt`` from the classical fit in place; return "ok" or why it is absent."""
    try:
        import awkward as ak

        from ..simulate.fit import fit_tracks
    except ImportError as err:
        return f"unavailable: {err}"
    import pyarrow.parquet as pq

    rows = columns["row"]
    shard_of = rows >> 32
    parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    try:
        for si in np.unique(shard_of):
            in_shard = np.unique(rows[shard_of == si] & 0xFFFFFFFF)
            table = pq.read_table(info.shards[int(si)],
                                  columns=[info.schema.hit_column, info.schema.muon_column]).take(in_shard)
            n_muons = np.diff(table.column(1).combine_chunks().offsets.to_numpy())
            fits = fit_tracks(ak.from_arrow(table.column(0)), n_muons=n_muons)
            counts = np.asarray(ak.num(fits, axis=1))
            flat = ak.flatten(fits)
            row_ids = np.repeat((int(si) << 32) + in_shard, counts)
            muon = np.asarray(ak.flatten(ak.local_index(fits, axis=1)))
            parts.append((row_ids, muon, {k: np.asarray(flat[k], dtype=np.float64) for k in FIT_COLUMNS}))
    except Exception as err:  # the baseline is optional: a failing fit must not lose the network's evaluation
        return f"failed: {type(err).__name__}: {err}"
    if not parts:
        return "failed: no events"
    fit_rows = np.concatenate([p[0] for p in parts])
    fit_muon = np.concatenate([p[1] for p in parts])
    key = fit_rows * 1024 + fit_muon
    order = np.argsort(key)
    key = key[order]
    want = columns["row"] * 1024 + columns["muon"]
    pos = np.clip(np.searchsorted(key, want), 0, max(len(key) - 1, 0))
    found = key[pos] == want if len(key) else np.zeros(len(want), bool)
    for name in FIT_COLUMNS:
        values = np.concatenate([p[2][name] for p in parts])[order]
        columns["fit_" + name] = np.where(found, values[pos] if len(values) else np.nan, np.nan)
    return "ok"


def write_predictions(columns: dict[str, np.ndarray], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(dict(columns.items())), path)


def evaluate(run_dir: str | Path, data_dir: str | Path, output: str | Path | None = None, *,
             split: str = "test", device: str | None = None, plots: bool = True,
             quiet: bool = True) -> dict[str, Any]:
    """Predict, add the baseline, compute metrics, write Parquet + JSON + PNGs; return the metrics
    (plus ``output``, the folder, and ``written``, the file names). ``quiet=False``: a line per stage
    on stderr (the command's progress). The dataset's readers' lock is held while the shards are read
    (the predictions, then the classical-fit baseline)."""
    from ..locks import reading

    with reading(str(data_dir), "evaluate"):
        return _evaluate(run_dir, data_dir, output, split=split, device=device, plots=plots, quiet=quiet)


def _evaluate(run_dir: str | Path, data_dir: str | Path, output: str | Path | None, *, split: str,
              device: str | None, plots: bool, quiet: bool) -> dict[str, Any]:
    import sys
    import time

    from .task_config import run_task

    if run_task(run_dir) == "hit_filter":  # per-hit scores: working points, not resolutions
        from .hiteval import evaluate_hit_filter

        return evaluate_hit_filter(run_dir, data_dir, output, split=split, device=device, plots=plots, quiet=quiet)

    def say(message: str) -> None:
        if not quiet:
            print(f"evaluate: {message}", file=sys.stderr, flush=True)

    run_dir = Path(run_dir)
    out_dir = Path(output) if output is not None else run_dir / "eval"
    t0 = time.perf_counter()
    checkpoint = find_checkpoint(run_dir)
    from .calibrate import apply_calibration, load_calibration, run_uncertainty

    # a stale or broken calibration is refused before any work; a run without widths has none to apply
    calibration = load_calibration(run_dir, checkpoint) if run_uncertainty(run_dir) != "none" else None
    say(f"predicting the {split} split of {data_dir} with {checkpoint}")
    columns, meta = predict(run_dir, data_dir, split=split, device=device)
    info = meta.pop("info")
    identity = sample_identity(info.manifest, columns)
    calibrated = calibration_note(columns, calibration, run_dir, identity["sample_id"])
    if calibration is not None and "pred_sigma_qpt" in columns:
        apply_calibration(columns, calibration)
    say(f"{len(columns['true_pt'])} muons predicted in {time.perf_counter() - t0:.0f} s; classical fit (baseline)")
    baseline = add_baseline(columns, info)
    say(f"baseline {baseline}; metrics with bootstrap errors{' and plots' if plots else ''}")
    evaluation_folder(out_dir)  # only now: a failed evaluation leaves the earlier one as it was
    write_predictions(columns, out_dir / "predictions.parquet")

    metrics: dict[str, Any] = {"run": str(run_dir.resolve()), "data": str(Path(data_dir).resolve()),
                               "label": run_dir.name, **meta, "n_muons": int(len(columns["true_pt"])),
                               **identity,
                               "pt_bins": list(PT_BINS), "regions": {k: list(v) for k, v in REGIONS.items()},
                               "baseline_status": baseline, "calibration": calibrated,
                               "methods": {"model": evaluate_method(columns, "pred")}}
    if baseline == "ok":
        fitted = np.isfinite(columns["fit_pt"])
        metrics["baseline_efficiency"] = float(fitted.mean()) if fitted.size else math.nan
        sub = {k: v[fitted] for k, v in columns.items()}
        metrics["methods"]["classical_fit"] = evaluate_method(sub, "fit")
        # The network on exactly the muons the fit could handle: the like-for-like comparison.
        metrics["methods"]["model_on_fitted"] = evaluate_method(sub, "pred")
    (out_dir / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2))
    written = ["predictions.parquet", "metrics.json"]
    if plots:
        from .plots import plot_all

        written += [p.name for p in plot_all(columns, metrics, out_dir)]
        from .plots import subtitle
        from .pull_plots import has_pulls, plot_pulls

        if has_pulls(metrics["methods"]):  # a method with per-muon σ: the network's head, the classical fit
            written.append(plot_pulls(columns, metrics, out_dir / "pulls_vs_pt.png",
                                      f"pulls of q/pT and interval coverage\n{subtitle(metrics)}").name)
    return {**metrics, "output": str(out_dir), "written": written}


def calibration_note(columns: dict[str, np.ndarray], doc: dict[str, Any] | None, run_dir: Path,
                     sample_id: str) -> dict[str, Any]:
    """What ``metrics.json`` says of the σ calibration: ``status`` (``applied``, ``none`` for a run
    without widths, ``absent``) and, when applied, where it was fitted (data, split, muons, cells) and
    ``in_sample``: whether it was fitted on the muons evaluated (``sample_id``)."""
    if "pred_sigma_qpt" not in columns:
        return {"status": "none"}
    if doc is None:
        return {"status": "absent", "why": f"no {run_dir}/calibration.json: the widths are the head's own "
                f"(make one with `muon-pipeline calibrate {run_dir} --data DATA`)"}
    return {"status": "applied", **{k: doc.get(k) for k in ("data", "dataset_id", "sample_id", "split", "n_muons")},
            "cells": len(doc["cells"]), "in_sample": doc.get("sample_id") == sample_id}


def sample_identity(manifest: dict[str, Any], columns: dict[str, np.ndarray]) -> dict[str, str]:
    """What makes two evaluations comparable: the same dataset (``dataset_id``: sha256 over the shards'
    checksums, in manifest order) and the same muons (``sample_id``: sha256 over the sorted
    (eventNumber, muon index) pairs evaluated, which the split and its fractions decide)."""
    import hashlib

    shards = hashlib.sha256("\n".join(str(s.get("sha256", s.get("path"))) for s in manifest["shards"]).encode())
    pairs = np.stack([np.asarray(columns["eventNumber"], np.int64), np.asarray(columns["muon"], np.int64)], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return {"dataset_id": shards.hexdigest()[:16],
            "sample_id": hashlib.sha256(np.ascontiguousarray(pairs).tobytes()).hexdigest()[:16]}
