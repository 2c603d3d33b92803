"""Open a converted dataset for training: what the trainer knows about it (numpy-free, torch-free).

The one place the training stage checks that a folder is a dataset (:func:`require_manifest`, used by
the commands before torch loads and by :func:`open_training_set`); everything else is delegated to
the shared opener, :func:`pipeline.dataset.open_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DatasetError
from ...schema import Schema


def require_manifest(data_dir: str | Path, option: str = "") -> Path:
    """``data_dir`` as a path, or ``DatasetError`` (exit 1: bad input) when it holds no manifest
    (``_manifest.json``, or ``manifest.json`` in a dataset written before the rename).

    ``option`` prefixes the message with the command-line option that named the folder (``"--data "``).
    """
    from ...format import MANIFEST, manifest_name

    root = Path(data_dir)
    if manifest_name(lambda name: (root / name).is_file()) is None:
        raise DatasetError(f"{option}{data_dir}: not a dataset (no {MANIFEST}); "
                           "write one with `muon-pipeline convert`")
    return root


@dataclass(frozen=True)
class TrainingSet:
    """What the trainer needs to know about a converted dataset directory."""

    root: Path
    schema: Schema
    shards: tuple[Path, ...]
    statistics: dict[str, dict[str, dict[str, float]]]
    manifest: dict[str, Any]

    @property
    def muon_fields(self) -> list[str]:
        """Truth-muon fields in schema order; batches carry all of them (targets are picked by index)."""
        return self.schema.names("muon")


def open_training_set(root: str | Path, verify_checksums: bool = True) -> TrainingSet:
    """Open a dataset with the shared opener (:func:`pipeline.dataset.open_dataset`): the manifest's shape,
    the shard path rules (nothing outside the dataset's ``shards/``), every shard's schema, and by default
    every shard's sha256, so the trainer reads only what ``validate`` would accept of the files.

    ``verify_checksums=False`` skips the sha256 pass (it reads every byte once; see README for its cost).
    Raises ``DatasetError`` with one line naming the dataset, the shard or manifest key, and why.
    """
    from ...dataset import open_dataset as open_checked

    root = require_manifest(root)
    ds = open_checked(str(root), checksums=verify_checksums)
    shards = tuple(Path(p) for p in ds.local_paths())
    return TrainingSet(root=root, schema=ds.schema, shards=shards,
                       statistics=ds.manifest.get("statistics") or {}, manifest=ds.manifest)
