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
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .calibration import MIN_CELL, apply_cells, cells_from_dicts, cells_to_dicts, fit_cells
from .metrics import qpt_pulls

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
    try:
        cells = fit_from_columns(columns, min_cell)
    except ValueError as err:
        raise DatasetError(f"{source.get('data')}: cannot calibrate on the {source.get('split')} split: {err}") from err
    doc = {"format": FORMAT, "version": VERSION, "checkpoint": Path(checkpoint).name,
           "checkpoint_sha256": _sha256(checkpoint), **source, "n_muons": int(len(columns["true_pt"])),
           "min_cell": min_cell, "method": "sigma scaling to pull core width 1, then split-conformal "
           "68.27 % / 95 % half-widths, per cell of |eta| region x predicted pT (pipeline.train.calibration)",
           "cells": cells}
    OutputDir(str(run_dir)).write_json(CALIBRATION, doc)
    return doc


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
        cells_from_dicts(doc["cells"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: not a calibration this version reads ({err}); make it again with "
                          f"`muon-pipeline calibrate {run_dir} --data DATA`") from err
    if doc.get("checkpoint_sha256") != _sha256(checkpoint):
        raise ConfigError(f"{path} was made for another checkpoint than {checkpoint} (the run trained on "
                          f"since?); make it again with `muon-pipeline calibrate {run_dir} --data DATA`")
    return doc


def apply_calibration(columns: dict[str, np.ndarray], doc: dict[str, Any]) -> None:
    """Calibrate the network's widths in ``columns`` in place: the head's own σ move to
    ``pred_sigma_qpt_raw`` / ``pred_sigma_pt_raw``; ``pred_sigma_qpt`` (GeV⁻¹), ``pred_sigma_pt``
    (GeV, σ(q/pT)·pT², first order) and ``pred_halfwidth68_qpt`` / ``pred_halfwidth95_qpt`` (GeV⁻¹)
    are the calibrated ones."""
    got = apply_cells(cells_from_dicts(doc["cells"]), columns["pred_sigma_qpt"], np.abs(columns["pred_eta"]),
                      columns["pred_pt"])
    columns["pred_sigma_qpt_raw"] = columns["pred_sigma_qpt"]
    if "pred_sigma_pt" in columns:
        columns["pred_sigma_pt_raw"] = columns["pred_sigma_pt"]
    pt = np.asarray(columns["pred_pt"], np.float64)
    columns["pred_sigma_qpt"] = got["sigma_qpt"].astype(np.float32)
    columns["pred_sigma_pt"] = (got["sigma_qpt"] * pt * pt).astype(np.float32)
    columns["pred_halfwidth68_qpt"] = got["halfwidth68_qpt"].astype(np.float32)
    columns["pred_halfwidth95_qpt"] = got["halfwidth95_qpt"].astype(np.float32)


def trained_on(run_dir: str | Path, data_dir: str | Path) -> bool:
    """Whether ``data_dir`` is the dataset the run trained on (its ``run.json``; False when unknown)."""
    try:
        path = json.loads((Path(run_dir) / "run.json").read_text())["dataset"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return Path(path).resolve() == Path(data_dir).resolve()


def summary_line(doc: dict[str, Any]) -> str:
    """One line on a calibration: cells, the range of the σ scale and of z68 / z95."""
    cells = doc["cells"]
    k, z68, z95 = ([float(c[key]) for c in cells] for key in ("scale", "z68", "z95"))
    return (f"{len(cells)} cells from {doc['n_muons']} muons of the {doc['split']} split; σ scale "
            f"{min(k):.2f}–{max(k):.2f}, 68 % half-width {min(z68):.2f}–{max(z68):.2f} σ, 95 % "
            f"{min(z95):.2f}–{max(z95):.2f} σ")
