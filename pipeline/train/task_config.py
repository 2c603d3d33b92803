"""Checks of the training config's task and attention keys (``task``, ``pos_weight``, ``attention``).

Stdlib (and pyyaml) only, like :mod:`.config`, which calls :func:`check_task` when a config loads and
:func:`check_task_inputs` once the dataset's hit inputs are known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, quote

#: Values of ``task``.
TASKS = ("regression", "hit_filter")
#: Values of ``attention.kind`` (the same as :data:`pipeline.train.attention.KINDS`, without torch).
ATTENTION_KINDS = ("full", "window")


def check_task(cfg: Any) -> None:
    """Raise ``ConfigError`` naming the key for a bad ``task``, ``pos_weight`` or ``attention`` value.

    A hit filter must not see the truth assignment: the muon-frame inputs are computed per object of
    ``assignment_field`` (the truth link), so ``frame_fields`` must be empty for ``task: hit_filter``.
    """
    if cfg.task not in TASKS:
        raise ConfigError(f"task: expected {' or '.join(TASKS)}, got {quote(cfg.task)}")
    if not (cfg.pos_weight > 0 and cfg.pos_weight < float("inf")):
        raise ConfigError(f"pos_weight: must be a finite number > 0, got {cfg.pos_weight}")
    a = cfg.attention
    if a.kind not in ATTENTION_KINDS:
        raise ConfigError(f"attention.kind: expected {' or '.join(ATTENTION_KINDS)}, got {quote(a.kind)}")
    if a.window < 2:
        raise ConfigError(f"attention.window: must be >= 2 hits, got {a.window}")
    if cfg.task == "hit_filter" and cfg.frame_fields:
        raise ConfigError(f"frame_fields: task hit_filter cannot use muon-frame inputs ({', '.join(cfg.frame_fields)}): "
                          f"they are computed per object of {cfg.assignment_field}, which would tell the filter the "
                          "answer; set frame_fields: []")
    if cfg.task == "hit_filter" and getattr(cfg, "uncertainty", "none") != "none":
        raise ConfigError(f"uncertainty: {quote(cfg.uncertainty)} is a width of the per-muon regression targets; "
                          "task hit_filter has none (set uncertainty: none)")


def check_task_inputs(cfg: Any, hit_fields: list[str]) -> None:
    """``attention.sort_key`` must be one of the resolved hit inputs (the encoder sorts on its own inputs)."""
    a = cfg.attention
    if a.kind == "window" and a.sort_key not in hit_fields:
        raise ConfigError(f"attention.sort_key: {quote(a.sort_key)} is not among the hit inputs "
                          f"({', '.join(hit_fields)}); windowed attention sorts the hits by an input field")


#: ``data.max_muons`` as the hit filter's loader uses it: no cap, every truth muon's hits are signal.
UNCAPPED_MUONS = 1 << 30


def label_max_muons(cfg: Any) -> int:
    """The muon cap a loader applies for ``cfg``: ``data.max_muons`` for the regression (hits of further
    muons become background), none for the hit filter (a muon hit is a muon hit, whatever its muon)."""
    return UNCAPPED_MUONS if cfg.task == "hit_filter" else cfg.data.max_muons


def run_task(run_dir: str | Path) -> str:
    """The ``task`` of a run directory's saved ``config.yaml`` (``regression`` where it names none)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return "regression"  # the regression's own loading says what is wrong with the run
    return raw.get("task", "regression") if isinstance(raw, dict) else "regression"
