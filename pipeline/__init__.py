"""muon-pipeline: ATLAS muon-spectrometer hit dumps to versioned, feature-augmented Parquet.

The public API is re-exported here lazily, so ``import pipeline`` stays cheap (no uproot,
no pyarrow, never torch) and command-line start-up stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_LAZY = {
    "load_schema": "pipeline.schema",
    "hit_features": "pipeline.features",
    "add_hit_features": "pipeline.features",
    "apply_selection": "pipeline.selection",
    "SelectionConfig": "pipeline.selection",
    "ConvertConfig": "pipeline.config",
    "SourceLayout": "pipeline.source",
    "convert": "pipeline.convert",
    "validate_dataset": "pipeline.validate",
    "migrate_dataset": "pipeline.migrate",
    "read_dataset": "pipeline.shards",
    "open_dataset": "pipeline.dataset",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
