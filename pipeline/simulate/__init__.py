"""Simulator of ATLAS-like muon-spectrometer hit dumps and its classical reference fit.

``simulate_events`` returns arrays, ``write_dump`` writes the ROOT TTree, ``fit_tracks`` fits
muons from their hits. Imported lazily so ``pipeline.cli`` start-up does not load the physics.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "simulate_events": "pipeline.simulate.generate",
    "SimConfig": "pipeline.simulate.generate",
    "write_dump": "pipeline.simulate.writer",
    "fit_tracks": "pipeline.simulate.fit",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.simulate' has no attribute {name!r}")
