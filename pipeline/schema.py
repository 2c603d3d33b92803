"""Versioned dataset schemas: load ``schemas/vN.yaml`` and derive everything else from it.

The YAML files are the single source of truth (columns, dtypes, units, ranges, model inputs);
the Arrow schema that ``convert`` writes and ``validate`` checks is built here from them, so no
column list is ever duplicated by hand in code.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SchemaError

#: Parquet key-value metadata key under which every shard declares its schema.
METADATA_KEY = b"muon_pipeline.schema"
LEVELS = ("event", "hit", "muon")
_FIELD_KEYS = {"name", "level", "dtype", "unit", "description", "source", "formula", "range",
               "allowed", "input"}
_DTYPES = {"int32", "int64", "float32", "float64", "string"}


def schema_dir() -> Path:
    """Where the schema files are: inside the wheel (``pipeline/_schemas``) or the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise SchemaError(f"no schema directory found next to {here}")


@dataclass(frozen=True)
class Field:
    """One column (or struct field) of the dataset, as declared in a schema file."""

    name: str
    level: str
    dtype: str
    unit: str = ""
    description: str = ""
    source: str | None = None
    formula: str | None = None
    range: tuple[float, float] | None = None
    allowed: tuple[int, ...] | None = None
    input: bool = False

    @property
    def derived(self) -> bool:
        return self.source is None

    def arrow_type(self):
        import pyarrow as pa

        return pa.string() if self.dtype == "string" else pa.from_numpy_dtype(self.dtype)

    def arrow_field(self):
        """The Arrow field, with the schema file's unit and description as field metadata (``unit``,
        ``description``; the unit is ``""`` for a dimensionless field), so a Parquet reader shows them."""
        import pyarrow as pa

        return pa.field(self.name, self.arrow_type(), nullable=False,
                        metadata={"unit": self.unit, "description": " ".join(self.description.split())})


@dataclass(frozen=True)
class Schema:
    """A loaded schema version; the accessors are what every other module asks of it."""

    name: str
    version: int
    description: str
    columns: dict[str, str]
    fields: tuple[Field, ...]
    added: tuple[str, ...] = field(default=())

    def level(self, level: str) -> list[Field]:
        return [f for f in self.fields if f.level == level]

    def names(self, level: str) -> list[str]:
        return [f.name for f in self.level(level)]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(f"schema {self.name} v{self.version} has no field {name!r}")

    def has(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)

    def inputs(self, level: str = "hit") -> list[str]:
        """Model input field names, in schema order (the trainer's default ``hit_fields``)."""
        return [f.name for f in self.level(level) if f.input]

    @property
    def hit_column(self) -> str:
        return self.columns["hit"]

    @property
    def muon_column(self) -> str:
        return self.columns["muon"]

    def metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps({"name": self.name, "version": self.version}).encode()}

    def arrow_schema(self):
        """The Arrow schema of one shard: event columns, then ``hits`` and ``truthMuons`` lists. Every
        field carries its unit and description as Arrow field metadata (stored in the Parquet footer)."""
        import pyarrow as pa

        cols = [f.arrow_field() for f in self.level("event")]
        for level in ("hit", "muon"):
            struct = pa.struct([f.arrow_field() for f in self.level(level)])
            cols.append(pa.field(self.columns[level], pa.list_(pa.field("item", struct, nullable=False)),
                                 nullable=False))
        return pa.schema(cols, metadata=self.metadata())


def _parse_field(raw: Any, where: str) -> Field:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_FIELD_KEYS)}")
    for key in ("name", "level", "dtype"):
        if key not in raw:
            raise SchemaError(f"{where}: missing required key {key!r}")
    if raw["level"] not in LEVELS:
        raise SchemaError(f"{where}: level {raw['level']!r} is not one of {LEVELS}")
    if raw["dtype"] not in _DTYPES:
        raise SchemaError(f"{where}: dtype {raw['dtype']!r} is not one of {sorted(_DTYPES)}")
    if ("source" in raw) == ("formula" in raw):
        raise SchemaError(f"{where}: give exactly one of 'source' (raw branch) or 'formula' (derived)")
    rng = raw.get("range")
    if rng is not None and (len(rng) != 2 or float(rng[0]) > float(rng[1])):
        raise SchemaError(f"{where}: range must be [lo, hi], got {rng!r}")
    return Field(
        name=str(raw["name"]), level=raw["level"], dtype=raw["dtype"], unit=str(raw.get("unit", "")),
        description=str(raw.get("description", "")), source=raw.get("source"), formula=raw.get("formula"),
        range=(float(rng[0]), float(rng[1])) if rng is not None else None,
        allowed=tuple(int(v) for v in raw["allowed"]) if "allowed" in raw else None,
        input=bool(raw.get("input", False)),
    )


def available_versions() -> list[int]:
    versions = []
    for path in schema_dir().glob("v*.yaml"):
        m = re.fullmatch(r"v(\d+)\.yaml", path.name)
        if m:
            versions.append(int(m.group(1)))
    return sorted(versions)


def latest_version() -> int:
    return available_versions()[-1]


@functools.cache
def load_schema(version: int | None = None) -> Schema:
    """Load one schema version (default: the newest), resolving ``extends`` chains."""
    if version is None:
        version = latest_version()
    path = schema_dir() / f"v{int(version)}.yaml"
    if not path.exists():
        raise SchemaError(f"unknown schema version {version}; available: {available_versions()}")
    with path.open() as fh:
        doc = yaml.safe_load(fh)
    where = str(path)
    if not isinstance(doc, dict) or doc.get("version") != int(version):
        raise SchemaError(f"{where}: 'version' must be {version}")
    if "extends" in doc:
        parent = load_schema(int(doc["extends"]))
        added = [_parse_field(raw, f"{where} added[{i}]") for i, raw in enumerate(doc.get("added", []))]
        # Appended per level, so struct fields of older versions keep their positions.
        fields = []
        for level in LEVELS:
            fields += parent.level(level) + [f for f in added if f.level == level]
        columns = dict(parent.columns)
        name = doc.get("schema", parent.name)
        added_names = tuple(f.name for f in added)
    else:
        fields = [_parse_field(raw, f"{where} fields[{i}]") for i, raw in enumerate(doc.get("fields", []))]
        columns = dict(doc.get("columns", {}))
        name = doc["schema"]
        added_names = ()
    names = [f.name for f in fields]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SchemaError(f"{where}: duplicate field(s) {sorted(dupes)}")
    return Schema(name=name, version=int(version), description=str(doc.get("description", "")).strip(),
                  columns=columns, fields=tuple(fields), added=added_names)


def versions_with_field(name: str) -> list[int]:
    return [v for v in available_versions() if load_schema(v).has(name)]


def missing_field_message(name: str, schema: Schema) -> str:
    """Explain which version has a field and how to get there (used by reader and trainer)."""
    having = versions_with_field(name)
    if not having:
        return f"no schema version defines a field {name!r} (known versions: {available_versions()})"
    return (f"field {name!r} is not in schema {schema.name} v{schema.version}; it was added in "
            f"v{having[0]}. Upgrade the dataset with `muon-pipeline migrate DIR --to-version {having[0]} "
            f"--output NEW_DIR` or convert again with --schema-version {having[0]}")


def schema_from_metadata(metadata: dict[bytes, bytes] | None) -> tuple[str, int]:
    """Read the (name, version) a shard declares; raises if it declares none."""
    if not metadata or METADATA_KEY not in metadata:
        raise SchemaError(f"no {METADATA_KEY.decode()} key in the Parquet metadata")
    try:
        doc = json.loads(metadata[METADATA_KEY])
        return str(doc["name"]), int(doc["version"])
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise SchemaError(f"unreadable {METADATA_KEY.decode()} metadata: {err}") from err
