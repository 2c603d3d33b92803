"""``muon-pipeline calibrate``: fit a run's σ(q/pT) calibration on a held-out split, and apply it.

The calibration (:mod:`.calibration`: σ scaling and conformal 68 % / 95 % intervals per cell of
|η| region × predicted pT) is part of the run: ``RUN/calibration.json``, written atomically, made for
one checkpoint (its sha256 is recorded) from one dataset split (path, ``dataset_id``, split, muons).
``train`` writes it at the end of a run with an uncertainty head, from the validation split of the
data it trained on; ``calibrate`` makes it again (another dataset, another split). ``evaluate``
applies it: ``pred_sigma_qpt`` and ``pred_sigma_pt`` are then the calibrated widths (the head's own
in ``pred_sigma_qpt_raw``, ``pred_sigma_pt_raw``) and ``pred_halfwidth68_qpt``,
``pred_halfwidth95_qpt`` the intervals' half-widths in q/pT.

Errors (one line each): a run without an uncertainty head, an empty split, a ``calibration.json``
that is malformed or was made for another checkpoint (stale after a resumed training).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..format import TMP_MARK
from .calibration import MIN_CELL, apply_cells, cells_from_dicts, cells_to_dicts, fit_cells
from .metrics import qpt_pulls

#: Fewest muons a calibration is fitted on: the 95 % conformal bound needs ⌈0.95·(n+1)⌉ ≤ n, and a
#: core fit a few dozen; below ``min_cell`` per region the regions share one cell (said by summary_line).
MIN_MUONS = 50
#: The calibration file in a run folder, and its format tag.
CALIBRATION = "calibration.json"
FORMAT = "muon-pipeline/calibration"
VERSION = 1


def _sha256(path: str | Path) -> str:
    from .predict import file_sha256

    return file_sha256(path)


def fit_from_columns(columns: dict[str, np.ndarray], min_cell: int = MIN_CELL) -> list[dict[str, Any]]:
    """JSON-ready cells from evaluate-style per-muon columns (``true_pt``, ``true_q``, ``pred_pt``,
    ``pred_q``, ``pred_eta``, ``pred_sigma_qpt``)."""
    pull = qpt_pulls(columns["true_pt"], columns["pred_pt"], columns["true_q"], columns["pred_q"],
                     columns["pred_sigma_qpt"])
    return cells_to_dicts(fit_cells(pull, np.abs(columns["pred_eta"]), columns["pred_pt"], min_cell))


def write_calibration(run_dir: str | Path, columns: dict[str, np.ndarray], checkpoint: str | Path,
                      source: dict[str, Any], min_cell: int = MIN_CELL) -> dict[str, Any]:
    """Fit the cells on ``columns`` (one split's per-muon predictions, :func:`.evaluate.predict`) and
    write ``RUN/calibration.json`` atomically; return what was written. ``source``: where the muons
    come from (``data``, ``dataset_id``, ``sample_id``, ``split``), recorded as given.

    Raises ConfigError for a run without an uncertainty head, DatasetError when no muon can be used."""
    from ..storage import OutputDir

    if "pred_sigma_qpt" not in columns:
        raise ConfigError(f"{run_dir}: the run has no uncertainty head (uncertainty: none), so there is no "
                          "σ to calibrate")
    if len(columns["true_pt"]) < MIN_MUONS:
        raise DatasetError(f"{source.get('data')}: the {source.get('split')} split has {len(columns['true_pt'])} "
                           f"muons, fewer than the {MIN_MUONS} a calibration needs (its 95 % quantile included)")
    try:
        cells = fit_from_columns(columns, min_cell)
    except ValueError as err:
        raise DatasetError(f"{source.get('data')}: cannot calibrate on the {source.get('split')} split: {err}") from err
    doc = {"format": FORMAT, "version": VERSION, "checkpoint": Path(checkpoint).name,
           "checkpoint_sha256": _sha256(checkpoint), **source, "n_muons": int(len(columns["true_pt"])),
           "min_cell": min_cell, "method": "sigma scaling to pull core width 1, then split-conformal "
           "68.27 % / 95 % half-widths, per cell of |eta| region x predicted pT (pipeline.train.calibration)",
           "cells": cells}
    out = OutputDir(str(run_dir))
    for stale in Path(run_dir).glob(f"{TMP_MARK}{CALIBRATION}.*"):  # a killed writer's (the run is ours now)
        stale.unlink(missing_ok=True)
    out.write_json(CALIBRATION, doc)
    return doc


def run_uncertainty(run_dir: str | Path) -> str:
    """The ``uncertainty`` of a run's saved config (``none`` for a hit-filter run or where unreadable:
    the run's own loading says what is wrong with it)."""
    import yaml

    try:
        raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return "none"
    if not isinstance(raw, dict) or raw.get("task", "regression") != "regression":
        return "none"
    return str(raw.get("uncertainty", "none"))


def check_calibratable(run_dir: str | Path) -> None:
    """Before any work: ConfigError unless the run has an uncertainty head and its folder is writable."""
    import os

    if run_uncertainty(run_dir) == "none":
        raise ConfigError(f"{run_dir}: the run has no uncertainty head (uncertainty: none, or a hit-filter run), so "
                          "there is no σ to calibrate")
    if not os.access(run_dir, os.W_OK):
        raise ConfigError(f"{run_dir}: cannot write calibration.json there (read-only folder)")


def load_calibration(run_dir: str | Path, checkpoint: str | Path) -> dict[str, Any] | None:
    """``RUN/calibration.json`` checked against ``checkpoint`` (the one being evaluated); None if absent.

    Raises ConfigError (one line, naming the file) when it is malformed or made for another checkpoint."""
    path = Path(run_dir) / CALIBRATION
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}, "
                             f"expected {FORMAT!r} version {VERSION}")
        check_cells(cells_from_dicts(doc["cells"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: not a calibration this version reads ({err}); make it again with "
                          f"`muon-pipeline calibrate {run_dir} --data DATA`") from err
    doc["_path"] = str(path)
    if doc.get("checkpoint_sha256") != _sha256(checkpoint):
        raise ConfigError(f"{path} was made for another checkpoint than {checkpoint} (the run trained on "
                          f"since?); make it again with `muon-pipeline calibrate {run_dir} --data DATA`")
    return doc


def check_cells(cells: list[Any]) -> None:
    """Raise ValueError unless ``cells`` (:class:`.calibration.Cell`) are usable: some, with ordered
    bounds, a finite positive scale and finite 0 < z68 ≤ z95, and each |η| region covered."""
    from .metrics import REGIONS

    if not cells:
        raise ValueError("no cells")
    for i, c in enumerate(cells):
        numbers = (c.scale, c.z68, c.z95)
        if not (c.eta_lo < c.eta_hi and c.pt_lo < c.pt_hi and c.n > 0
                and all(isinstance(x, float) and math.isfinite(x) for x in numbers)
                and c.scale > 0 and 0 < c.z68 <= c.z95):
            raise ValueError(f"cell {i} ({c.region}) has unusable values: bounds |eta| {c.eta_lo}-{c.eta_hi}, "
                             f"pT {c.pt_lo}-{c.pt_hi}, n {c.n}, scale {c.scale}, z68 {c.z68}, z95 {c.z95}")
    missing = set(REGIONS) - {c.region for c in cells}
    if missing:
        raise ValueError(f"no cell for the |eta| region(s) {', '.join(sorted(missing))}")


def apply_calibration(columns: dict[str, np.ndarray], doc: dict[str, Any]) -> None:
    """Calibrate the network's widths in ``columns`` in place: the head's own σ move to
    ``pred_sigma_qpt_raw`` / ``pred_sigma_pt_raw``; ``pred_sigma_qpt`` (GeV⁻¹), ``pred_sigma_pt``
    (GeV, σ(q/pT)·pT², first order) and ``pred_halfwidth68_qpt`` / ``pred_halfwidth95_qpt`` (GeV⁻¹)
    are the calibrated ones."""
    got = apply_cells(cells_from_dicts(doc["cells"]), columns["pred_sigma_qpt"], np.abs(columns["pred_eta"]),
                      columns["pred_pt"])
    usable = np.isfinite(columns["pred_sigma_qpt"]) & np.isfinite(columns["pred_eta"]) & np.isfinite(columns["pred_pt"])
    lost = int(np.sum(usable & ~np.isfinite(got["sigma_qpt"])))
    if lost:
        raise ConfigError(f"{doc.get('_path', CALIBRATION)}: {lost} muon(s) fall in no calibration cell (the cells do "
                          "not tile |eta| and pT); make it again with `muon-pipeline calibrate`")
    columns["pred_sigma_qpt_raw"] = columns["pred_sigma_qpt"]
    if "pred_sigma_pt" in columns:
        columns["pred_sigma_pt_raw"] = columns["pred_sigma_pt"]
    pt = np.asarray(columns["pred_pt"], np.float64)
    columns["pred_sigma_qpt"] = got["sigma_qpt"].astype(np.float32)
    columns["pred_sigma_pt"] = (got["sigma_qpt"] * pt * pt).astype(np.float32)
    columns["pred_halfwidth68_qpt"] = got["halfwidth68_qpt"].astype(np.float32)
    columns["pred_halfwidth95_qpt"] = got["halfwidth95_qpt"].astype(np.float32)
    for level in ("68", "95"):
        lo, hi = pt_interval(pt, got[f"halfwidth{level}_qpt"])
        columns[f"pred_pt_lo{level}"], columns[f"pred_pt_hi{level}"] = lo.astype(np.float32), hi.astype(np.float32)


def pt_interval(pred_pt: np.ndarray, halfwidth_qpt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pT interval [GeV] of the q/pT interval q/pT_pred ± h: [1/(|q/pT| + h), 1/(|q/pT| − h)];
    the upper end is +∞ where h ≥ |q/pT| (the interval holds q/pT = 0: the charge is not determined
    at that level and pT has no upper bound). Arrays [N]; NaN where h is NaN."""
    inv = 1.0 / np.asarray(pred_pt, np.float64)
    h = np.asarray(halfwidth_qpt, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = 1.0 / (inv + h)
        hi = np.where(h < inv, 1.0 / (inv - h), np.where(np.isnan(h), np.nan, np.inf))
    return lo, hi


def trained_on(run_dir: str | Path, data_dir: str | Path) -> bool:
    """Whether ``data_dir`` is the dataset the run trained on (its ``run.json``; False when unknown)."""
    try:
        path = json.loads((Path(run_dir) / "run.json").read_text())["dataset"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return Path(path).resolve() == Path(data_dir).resolve()


def summary_line(doc: dict[str, Any]) -> str:
    """One line on a calibration: cells, the range of the σ scale and of z68 / z95, and which |η|
    regions held too few muons for cells of their own (each is then one cell fitted on every muon)."""
    cells = doc["cells"]
    k, z68, z95 = ([float(c[key]) for c in cells] for key in ("scale", "z68", "z95"))
    pooled = [c["region"] for c in cells if int(c["n"]) == int(doc["n_muons"]) and len(cells) > 1]
    short = (f"; {', '.join(pooled)}: fewer than {doc['min_cell']} muons, fitted on all {doc['n_muons']} "
             "(a larger calibration sample gives cells of their own)") if pooled else ""
    return (f"{len(cells)} cells from {doc['n_muons']} muons of the {doc['split']} split; σ scale "
            f"{min(k):.2f}–{max(k):.2f}, 68 % half-width {min(z68):.2f}–{max(z68):.2f} σ, 95 % "
            f"{min(z95):.2f}–{max(z95):.2f} σ{short}")


