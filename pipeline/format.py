"""The dataset format's names and identity: a leaf every layer may import (it imports only the stdlib).

On-disk names of an output folder (written by ``convert`` and any later producer)::

    _manifest.json         MANIFEST  (format FORMAT, format_version FORMAT_VERSION; written last, by finalize)
    shards/part-KEY.parquet SHARDS   one per work unit, KEY = the first 16 hex digits of the unit key
    _work/plan.json        PLAN      what the run will produce (see pipeline.plan)
    _work/units/KEY.json   RECORDS   one record per finished unit
    .tmp-*                 TMP_MARK  a writer's temporary, renamed into place when complete

The manifest's name starts with ``_`` so that Parquet readers given the dataset folder itself
(``pandas.read_parquet(DS)``, ``pyarrow.dataset.dataset(DS)``) skip it, as they skip ``_work/`` and the
hidden temporaries. Datasets written before the rename (see CHANGELOG) call it ``manifest.json``
(``LEGACY_MANIFEST``): readers accept either (:func:`manifest_name`), and the next ``finalize`` or
``migrate`` writes the new name.

Identity: a unit's *key* hashes its input's identity, entry range, the configuration hash and the
tool version (a finished unit with the same key is never redone); the *dataset id* hashes the
configuration and the tool version (every shard carries it in its Parquet metadata, under
``IDENTITY_KEY``, so a shard of another dataset is caught even when a manifest checksum was edited).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from ._version import __version__

WORK = "_work"
PLAN = f"{WORK}/plan.json"
RECORDS = f"{WORK}/units"
SHARDS = "shards"
MANIFEST = "_manifest.json"
#: The manifest's name in datasets written before it was renamed; still read.
LEGACY_MANIFEST = "manifest.json"
FORMAT = "muon-pipeline/dataset"
FORMAT_VERSION = 1
#: Prefix of a writer's temporary files (``.tmp-NAME.PID.RANDOM``), renamed into place when complete.
TMP_MARK = ".tmp-"
#: Parquet key-value metadata key under which every shard names the dataset and the unit it belongs to.
IDENTITY_KEY = b"muon_pipeline.shard"


def manifest_name(exists) -> str | None:
    """The manifest's name in a dataset folder, given ``exists(name) -> bool`` for names in that folder:
    ``MANIFEST``, else ``LEGACY_MANIFEST`` (a dataset written before the rename), else None."""
    for name in (MANIFEST, LEGACY_MANIFEST):
        if exists(name):
            return name
    return None


@dataclass(frozen=True)
class Unit:
    """One work unit: entries ``[entry_start, entry_stop)`` of input ``input``; writes one shard.

    ``uuid`` is the input's ROOT UUID at planning time (checked again when the unit runs)."""

    index: int
    input: str
    entry_start: int
    entry_stop: int
    key: str
    uuid: str = ""

    @property
    def shard(self) -> str:
        return f"{SHARDS}/part-{self.key[:16]}.parquet"

    @property
    def record(self) -> str:
        return f"{RECORDS}/{self.key[:16]}.json"

    @property
    def entries(self) -> int:
        return self.entry_stop - self.entry_start

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InputInfo:
    """Identity of an input file: what the resume key and the manifest record.

    ``container`` is ``TTree`` or ``RNTuple``; ``branches`` maps each field read from the file to
    ``{"branch": name, "dtype": input dtype}`` (the manifest's record of what was converted from what).
    """

    path: str
    size: int
    entries: int
    uuid: str
    container: str = ""
    branches: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"path": self.path, "size": self.size, "entries": self.entries, "uuid": self.uuid}
        if self.container:
            d["container"] = self.container
        if self.branches:
            d["branches"] = {k: dict(v) for k, v in self.branches.items()}
        return d


def unit_key(info: InputInfo, start: int, stop: int, config_hash: str, tool: str = __version__) -> str:
    """sha256 (hex) of the input identity (uuid, size, path), the entry range, the config hash and tool."""
    doc = {"uuid": info.uuid, "size": info.size, "path": info.path, "entry_start": start,
           "entry_stop": stop, "config": config_hash, "tool": tool}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def dataset_id(config_hash: str, tool_version: str) -> str:
    """The identity of the dataset a shard belongs to: its conversion configuration (schema version,
    selection, layout, codec, sizes) and tool version, hashed (32 hex digits). Every shard of a dataset
    carries it, and so does the manifest (``dataset_id``); the input set is not part of it, so
    ``--reconfigure`` after adding an input keeps the finished shards of the others."""
    doc = {"config": config_hash, "tool": tool_version}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def identity_metadata(dataset: str, unit: dict) -> dict[bytes, bytes]:
    """``{IDENTITY_KEY: json}`` for a shard: the dataset id and the unit (key, input, entry range). Not the
    unit's index in the plan: it moves when ``--reconfigure`` adds an input, while the shard is reused."""
    doc = {"dataset": dataset, "unit": unit["key"], "input": unit["input"],
           "entry_start": unit["entry_start"], "entry_stop": unit["entry_stop"]}
    return {IDENTITY_KEY: json.dumps(doc, sort_keys=True).encode()}


def read_identity(metadata: dict[bytes, bytes] | None) -> dict | None:
    """The identity a shard declares (see ``identity_metadata``), or None when it declares none."""
    if not metadata or IDENTITY_KEY not in metadata:
        return None
    try:
        doc = json.loads(metadata[IDENTITY_KEY])
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
