"""The files of a training run that every reader of it needs: its checkpoint, loaded safely, and strict JSON.

Used by ``evaluate``, ``predict`` and the hit-filter evaluation (no one of them imports another for these).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def find_checkpoint(run_dir: Path) -> Path:
    """``checkpoints/best.ckpt`` (else ``last.ckpt``) of a run, checked to be a torch archive without torch."""
    import zipfile

    for name in ("best.ckpt", "last.ckpt"):
        path = run_dir / "checkpoints" / name
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise ConfigError(f"{path}: not a torch checkpoint (not a zip archive; truncated or overwritten?)")
            return path
    raise ConfigError(f"{run_dir}: no checkpoints/best.ckpt or last.ckpt; is this a `muon-pipeline train` output?")


def load_module(ckpt: Path) -> Any:
    """The ``RegressionModule`` of a checkpoint, loaded with ``weights_only=True`` (tensors and plain
    containers only, whatever the torch version's default): a checkpoint carrying other pickled objects
    is refused with one line instead of running their code."""
    import pickle

    from .module import RegressionModule

    try:
        return RegressionModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"{ckpt}: refusing to load a checkpoint that holds objects other than tensors and "
                          f"plain containers (weights_only): {' '.join(str(err).split())[:200]}") from err


def finite(x: Any) -> Any:
    """NaN / inf → null, so metrics.json is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


#: What an evaluation writes into its folder (besides the plots, ``*.png``).
EVALUATION_FILES = ("metrics.json", "predictions.parquet")


def evaluation_folder(out_dir: Path) -> Path:
    """Create ``out_dir`` for a new evaluation and remove what an earlier one wrote there (its metrics,
    predictions and plots): a re-evaluation on another dataset, or with ``--no-plots``, must not leave
    the earlier plots beside the new numbers. Other files are left alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in out_dir.iterdir():
        if path.is_file() and (path.name in EVALUATION_FILES or path.suffix == ".png"):
            path.unlink()
    return out_dir
