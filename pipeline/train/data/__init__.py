"""The training data layer: a converted dataset → padded batches of one split, split by job.

Contract: only :mod:`.stream` (the ``IterableDataset`` that reads shards) and :mod:`.resident` (the
device-resident split) import torch; every other module is numpy (and pyarrow) only, importable and
testable without torch. Importing this package loads none of torch: the names of the two torch
modules are loaded on first use (module ``__getattr__``).

=================  ==========================================================================
``info``           open a dataset for training (:func:`open_training_set`, :class:`TrainingSet`)
``split``          train / val / test membership from ``eventNumber`` (splitmix64)
``normalise``      input normalisation (:class:`Normalisation`), truth values for target scales
``chunks``         events as flat arrays + offsets (:class:`Chunk`): from a table, take, concat
``batches``        length bucketing, batch cutting, padding (:func:`collate`)
``deal``           which row groups / events each (rank, worker) slot reads (:func:`deal_events`)
``stream``         :class:`ShardStream`, :func:`make_stream`, :func:`make_loader` (torch)
``resident``       the split as device tensors, batches cut on the device (torch)
=================  ==========================================================================
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .batches import bucket_batches, clip_links, collate, cut_buffer
from .chunks import LINK_FIELD, Chunk, chunk_from_table, concat_chunks, frame_inputs, take_events
from .deal import RowGroup, Segment, deal_events
from .info import TrainingSet, open_training_set, require_manifest
from .normalise import Normalisation, muon_values, normalisation_for
from .split import SPLITS, split_codes, splitmix64

if TYPE_CHECKING:
    from .resident import ResidentStream, make_resident_loader, use_resident
    from .stream import ShardStream, make_loader, make_stream

__all__ = [
    # opening a dataset (info)
    "TrainingSet", "open_training_set", "require_manifest",
    # splits (split)
    "SPLITS", "split_codes", "splitmix64",
    # scales of inputs and targets (normalise)
    "Normalisation", "normalisation_for", "muon_values",
    # events as flat arrays (chunks)
    "LINK_FIELD", "Chunk", "chunk_from_table", "concat_chunks", "take_events", "frame_inputs",
    # batches (batches)
    "bucket_batches", "clip_links", "collate", "cut_buffer",
    # the deal to ranks and workers (deal)
    "RowGroup", "Segment", "deal_events",
    # torch, loaded on first use (stream, resident)
    "ShardStream", "make_stream", "make_loader", "ResidentStream", "make_resident_loader", "use_resident",
]

#: The names of the torch modules, loaded on first access.
_LAZY = {"ShardStream": "stream", "make_stream": "stream", "make_loader": "stream",
         "ResidentStream": "resident", "make_resident_loader": "resident", "use_resident": "resident"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
