"""The configuration of a derived dataset (``muon-pipeline filter``), and the dispatch every reader uses to
read a manifest's ``config`` whatever produced it.

A derived dataset's ``config`` is its parent's conversion configuration (schema version, selection,
layout, codec, sizes: the keys every reader knows, with the same meaning) plus ``"producer": "filter"``
and a ``filter`` section: what the dataset was derived from (the parent's dataset id and manifest
sha256, the scores id) and how (threshold, working point, caps)::

    {..., "producer": "filter",
     "filter": {"parent": {"path", "dataset_id", "manifest_sha256"},
                "scores": {"path", "scores_id", "checkpoint_sha256"},
                "threshold": 0.73, "working_point": 0.99,
                "max_muons_per_event": 2, "max_hits_per_event": 600}}

Its hash (part of every unit key and of the dataset id) leaves out the two paths: a parent or scores
folder read under another spelling, or moved, is the same lineage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass

from .config import ConvertConfig
from .derive_flow import Caps
from .errors import ConfigError

PRODUCER_KEY = "producer"
FILTER = "filter"


def is_derived(config: object) -> bool:
    """A manifest or plan ``config`` written by ``filter``."""
    return isinstance(config, dict) and config.get(PRODUCER_KEY) == FILTER


@dataclass(frozen=True)
class FilterConfig:
    """What decides the bytes of a filtered dataset; see the module docstring. ``base``: the parent's
    conversion configuration (its selection is applied again, its codec and schema written)."""

    base: ConvertConfig
    parent_dataset_id: str
    parent_manifest_sha256: str
    scores_id: str
    threshold: float
    working_point: float | None = None
    caps: Caps = Caps()
    parent_path: str = ""
    scores_path: str = ""
    checkpoint_sha256: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, int | float) and math.isfinite(self.threshold)):
            raise ConfigError(f"--threshold must be a finite number, got {self.threshold!r}")

    def to_dict(self) -> dict:
        return {**self.base.to_dict(), PRODUCER_KEY: FILTER, FILTER: {
            "parent": {"path": self.parent_path, "dataset_id": self.parent_dataset_id,
                       "manifest_sha256": self.parent_manifest_sha256},
            "scores": {"path": self.scores_path, "scores_id": self.scores_id,
                       "checkpoint_sha256": self.checkpoint_sha256},
            "threshold": float(self.threshold), "working_point": self.working_point,
            "max_muons_per_event": self.caps.max_muons_per_event,
            "max_hits_per_event": self.caps.max_hits_per_event}}

    @classmethod
    def from_dict(cls, d: dict) -> FilterConfig:
        f = d[FILTER]
        wp = f.get("working_point")
        return cls(base=ConvertConfig.from_dict(d), parent_dataset_id=str(f["parent"]["dataset_id"]),
                   parent_manifest_sha256=str(f["parent"]["manifest_sha256"]),
                   scores_id=str(f["scores"]["scores_id"]), threshold=float(f["threshold"]),
                   working_point=None if wp is None else float(wp),
                   caps=Caps(_opt_int(f.get("max_muons_per_event")), _opt_int(f.get("max_hits_per_event"))),
                   parent_path=str(f["parent"].get("path", "")), scores_path=str(f["scores"].get("path", "")),
                   checkpoint_sha256=f["scores"].get("checkpoint_sha256"))

    def hash(self) -> str:
        doc = copy.deepcopy(self.to_dict())
        doc[FILTER]["parent"].pop("path")
        doc[FILTER]["scores"].pop("path")
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def config_of(config: dict) -> ConvertConfig | FilterConfig:
    """The typed configuration of a manifest's or plan's ``config`` dict, whatever produced it. Raises
    (KeyError, ValueError, ConfigError …) when it is malformed."""
    return FilterConfig.from_dict(config) if is_derived(config) else ConvertConfig.from_dict(config)


def config_hash(config: dict) -> str:
    """The hash of a manifest's ``config`` (what unit keys and the dataset id are made of)."""
    return config_of(config).hash()
