"""muon-pipeline: ATLAS muon-spectrometer hit dumps to versioned, feature-augmented Parquet.

Public API (``import pipeline``; each name is loaded on first use, so ``import pipeline`` stays cheap:
no uproot, no pyarrow, never torch):

Converting
    convert(inputs, output, cfg, *, settings=None, task=None, reconfigure=False, **run_settings_fields)
    ConvertConfig, RunSettings, SourceLayout, SelectionConfig, TransformConfig
Derived datasets
    filter_dataset(parent, scores, output, *, working_point=None, threshold=None, ...)
    write_scores(output, parent_dir, per_shard, run=None), open_scores(path, parent=None)
Reading and checking a dataset
    open_dataset(directory, *, checksums=False), read_dataset(directory, columns=None)
    reading(directory): hold the readers' lock while a block reads a dataset (no writer deletes it)
    validate_dataset(directory, ...), migrate_dataset(...), load_schema(version)
Columnwise transforms
    hit_features(...), add_hit_features(...), apply_selection(...)

Every name is the same object on every access (``pipeline.convert is pipeline.convert``), and
``help(pipeline)`` lists them with their docstrings.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: Public name -> the module that defines it.
_PUBLIC = {
    "convert": "pipeline.conversion",
    "ConvertConfig": "pipeline.config",
    "RunSettings": "pipeline.settings",
    "SourceLayout": "pipeline.layout",
    "SelectionConfig": "pipeline.selection",
    "TransformConfig": "pipeline.transform",
    "open_dataset": "pipeline.dataset",
    "read_dataset": "pipeline.dataset",
    "reading": "pipeline.locks",
    "validate_dataset": "pipeline.validate",
    "migrate_dataset": "pipeline.migrate",
    "load_schema": "pipeline.schema",
    "hit_features": "pipeline.features",
    "add_hit_features": "pipeline.features",
    "apply_selection": "pipeline.selection",
    "filter_dataset": "pipeline.derive",
    "write_scores": "pipeline.scores",
    "open_scores": "pipeline.scores",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later accesses find it here: the same object every time
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
