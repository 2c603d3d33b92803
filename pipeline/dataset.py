"""One opener for every reader of a dataset: the trainer, ``read_dataset``, ``inspect``, ``migrate``,
``evaluate``; ``validate`` applies the same rules and reports every breach instead of the first.

What it checks, cheapest first:

* the manifest's shape: every key a reader uses is there with its type (``manifest_problems``);
* every shard path (``shard_path_problem``): relative, no ``..``, exactly ``shards/NAME.parquet``, a
  regular file that resolves (through links) inside the dataset's ``shards/``, listed once;
* each shard's size against the manifest, its declared schema (name, version) and its Arrow schema
  (columns, types, nesting) against the manifest's (Parquet footers only: no data read);
* with ``checksums``, each shard's sha256 (reads every byte: the trainer's default).

Every refusal is one :class:`~pipeline.errors.DatasetError` line naming the dataset, the shard or the
manifest key, and why.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

from .derive_config import config_hash, config_of, is_derived
from .errors import DatasetError, SchemaError, one_line
from .format import MANIFEST, SHARDS, InputInfo, dataset_id, manifest_name, read_identity, unit_key
from .manifest_file import read_manifest
from .report import Where, render_where
from .schema import Schema, load_schema, schema_from_metadata
from .storage import OutputDir

_INT = (int,)
SHARD_KEYS: dict[str, tuple[type, ...]] = {"path": (str,), "rows": _INT, "hits": _INT, "muons": _INT,
                                           "bytes": _INT, "sha256": (str,), "unit": (dict,)}
UNIT_KEYS: dict[str, tuple[type, ...]] = {"index": _INT, "input": (str,), "entry_start": _INT, "entry_stop": _INT}
INPUT_KEYS: dict[str, tuple[type, ...]] = {"path": (str,), "size": _INT, "entries": _INT, "uuid": (str,)}
CUTFLOW_KEYS = ("entries_in", "events_out", "events_cut", "entries_skipped", "events_no_muon", "events_invalid",
                "muons_in", "muons_fail_pt", "muons_fail_eta", "muons_fail_hits", "muons_out")
TOTAL_KEYS = ("events", "hits", "muons", "bytes")


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _keys(doc: Any, spec: dict[str, tuple[type, ...]], where: Where) -> list[tuple[Where, str]]:
    if not isinstance(doc, dict):
        return [(where, f"expected an object, got {type(doc).__name__}")]
    out: list[tuple[Where, str]] = []
    for key, types in spec.items():
        if key not in doc:
            out.append(((*where, key), "missing"))
        elif not _typed(doc[key], types):
            out.append(((*where, key), f"expected {types[0].__name__}, got {type(doc[key]).__name__}"))
    return out


def manifest_problems(manifest: dict) -> list[tuple[str, str]]:
    """``(key, message)`` for each key a reader needs that is missing or mistyped (empty: well-formed).

    Keys are written as paths into the JSON (``shards[2].sha256``, ``schema.version``): the text of
    :func:`manifest_faults`'s keys.
    """
    return [(render_where(where), why) for where, why in manifest_faults(manifest)]


def manifest_faults(manifest: dict) -> list[tuple[Where, str]]:
    """:func:`manifest_problems` with each key as a tuple of keys and list indices (``("shards", 2,
    "sha256")``), so a caller reads the top-level key and the shard index without parsing text."""
    out: list[tuple[Where, str]] = []
    out += _keys(manifest.get("schema"), {"name": (str,), "version": _INT}, ("schema",))
    if manifest.get("format_version") != 1 or isinstance(manifest.get("format_version"), bool):
        out.append((("format_version",), f"{manifest.get('format_version')!r}; this version reads format 1"))
    if not isinstance(manifest.get("dataset_id"), str):
        out.append((("dataset_id",), "missing or not a string"))
    units = manifest.get("units")
    if not _typed(units, _INT) or units < 0:
        out.append((("units",), "missing or not a non-negative integer"))
    # what inspect and the trainer read besides shards (their absence was a KeyError traceback)
    skipped = manifest.get("skipped")
    if not isinstance(skipped, dict) or not all(isinstance(skipped.get(k), list) for k in ("inputs", "units")):
        out.append((("skipped",), "missing or not an object with lists 'inputs' and 'units'"))
    if not isinstance(manifest.get("statistics"), dict):
        out.append((("statistics",), "missing or not an object (the trainer normalises with it)"))
    if not isinstance(manifest.get("tool_version"), str):
        out.append((("tool_version",), "missing or not a string"))
    config = manifest.get("config")
    if not isinstance(config, dict):
        out.append((("config",), "missing or not an object"))
    else:
        try:
            config_of(config)
        except Exception as err:  # noqa: BLE001 - any defect of a hand-edited config is reported, not raised
            what = "filter" if is_derived(config) else "conversion"
            out.append((("config",), f"not a valid {what} configuration ({type(err).__name__}: {err})"))
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list):
        out.append((("inputs",), "missing or not a list"))
    else:
        for i, doc in enumerate(inputs):
            out += _keys(doc, INPUT_KEYS, ("inputs", i))
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        out.append((("shards",), "missing or not a list"))
    else:
        for i, doc in enumerate(shards):
            found = _keys(doc, SHARD_KEYS, ("shards", i))
            out += found
            if isinstance(doc, dict) and isinstance(doc.get("unit"), dict):
                out += _keys(doc["unit"], UNIT_KEYS, ("shards", i, "unit"))
    for name, keys in (("cutflow", CUTFLOW_KEYS), ("totals", TOTAL_KEYS)):
        out += _keys(manifest.get(name), dict.fromkeys(keys, _INT), (name,))
    if "statistics" in manifest and not isinstance(manifest["statistics"], dict):
        out.append((("statistics",), "not an object"))  # absent is allowed: readers recompute; validate reports it
    return out


def shard_path_problem(rel: Any) -> str | None:
    """Why ``rel`` (a manifest shard path) is not acceptable, or None.

    Accepted: exactly ``shards/NAME.parquet``, relative, no ``..``, ``.`` or empty parts, NAME not hidden.
    """
    if not isinstance(rel, str) or not rel:
        return "shard path is not a non-empty string"
    if rel.startswith(("/", "\\")) or "://" in rel or (len(rel) > 1 and rel[1] == ":"):
        return "absolute shard path, outside the dataset: a manifest names files inside its shards/ only"
    parts = rel.split("/")
    if ".." in parts:
        return "shard path with '..' leaves the dataset"
    if "\\" in rel or "." in parts or "" in parts or posixpath.normpath(rel) != rel:
        return "shard path is not in normal form (shards/NAME.parquet)"
    if len(parts) != 2 or parts[0] != SHARDS:
        return f"shard path must be {SHARDS}/NAME.parquet"
    if parts[1].startswith(".") or not parts[1].endswith(".parquet"):
        return f"shard file name must be NAME.parquet (not hidden), got {parts[1]!r}"
    return None


def shard_file_problem(out: OutputDir, rel: str) -> str | None:
    """Why the (rule-abiding) path ``rel`` is not a readable shard file inside ``shards/``, or None."""
    fault = shard_file_fault(out, rel)
    return fault[1] if fault else None


def shard_file_fault(out: OutputDir, rel: str) -> tuple[str, str] | None:
    """:func:`shard_file_problem` as ``(kind, message)``: kind ``missing`` (no such file) or ``path`` (a
    directory, a link out of ``shards/``, not a regular file)."""
    path = out.path(rel)
    if not out.fs.exists(path):
        return "missing", "shard listed in the manifest does not exist"
    if out.fs.isdir(path):
        return "path", "shard path is a directory, not a file"
    if out.local:
        real = os.path.realpath(path)
        inside = os.path.join(os.path.realpath(out.root), SHARDS) + os.sep  # a linked shards/ leads out too
        if not real.startswith(inside):
            return "path", f"shard is a link to {real}, outside the dataset's {SHARDS}/"
        if not os.path.isfile(real):
            return "path", "shard is not a regular file"
    return None


def shard_schema_problems(arrow_schema, schema: Schema) -> list[tuple[str, str | None, str]]:
    """``(kind, column, message)`` where a shard's Arrow schema (with its metadata) differs from ``schema``;
    kinds: ``version`` (the declared schema), ``columns`` (missing/unexpected), ``types``."""
    out: list[tuple[str, str | None, str]] = []
    try:
        name, version = schema_from_metadata(arrow_schema.metadata)
        if (name, version) != (schema.name, schema.version):
            out.append(("version", None, f"shard declares {name} v{version}, manifest {schema.name} v{schema.version}"))
    except SchemaError as err:
        out.append(("version", None, str(err)))
    expected = schema.arrow_schema()
    exp = {f.name: f for f in expected}
    act = {f.name: f for f in arrow_schema}
    for name, f in exp.items():
        if name not in act:
            out.append(("columns", name, f"missing column (expected {f.type})"))
        elif not act[name].type.equals(f.type):
            et, at = f.type, act[name].type
            detail = f"type {at}, expected {et}"
            if hasattr(et, "value_type") and hasattr(at, "value_type") and hasattr(at.value_type, "num_fields"):
                es = {x.name: x.type for x in et.value_type}
                as_ = {x.name: x.type for x in at.value_type}
                parts = [f"{k} missing" for k in es if k not in as_]
                parts += [f"{k} is {as_[k]}, expected {es[k]}" for k in es if k in as_ and as_[k] != es[k]]
                parts += [f"{k} unexpected" for k in as_ if k not in es]
                if parts:
                    detail = "; ".join(parts)
            out.append(("types", name, detail))
    out += [("columns", name, "unexpected column") for name in act if name not in exp]
    return out


@dataclass(frozen=True)
class Identity:
    """What the manifest says every shard's identity must be: the dataset id (from its ``config`` and
    ``tool_version``) and, per input path, the input identity that unit keys hash."""

    dataset: str
    config_hash: str
    tool: str
    inputs: dict[str, InputInfo]

    @classmethod
    def of(cls, manifest: dict) -> Identity:
        """Raises (any exception) when the manifest's config or inputs are malformed: check those first."""
        cfg_hash = config_hash(manifest["config"])  # a converted or a derived (filter) dataset
        tool = manifest["tool_version"]
        inputs = {i["path"]: InputInfo(i["path"], i["size"], i["entries"], i["uuid"]) for i in manifest["inputs"]}
        return cls(dataset_id(cfg_hash, tool), cfg_hash, tool, inputs)

    def unit_key(self, unit: dict) -> str | None:
        """The key a shard of manifest unit ``unit`` must carry (None: its input is not in the manifest)."""
        info = self.inputs.get(unit["input"])
        if info is None:
            return None
        return unit_key(info, unit["entry_start"], unit["entry_stop"], self.config_hash, tool=self.tool)

    def problems(self, declared: dict | None, entry: dict) -> list[str]:
        """Why a shard declaring ``declared`` (``shards.read_identity``) cannot be manifest entry ``entry``."""
        if declared is None:
            return ["declares no dataset/unit identity (Parquet metadata muon_pipeline.shard): written by an older "
                    "tool or by something else; convert again"]
        out = []
        if declared.get("dataset") != self.dataset:
            out.append(f"belongs to dataset {declared.get('dataset')} (its own metadata), not to this one "
                       f"({self.dataset}, from the manifest's config and tool_version): a shard of another "
                       "dataset, or an edited manifest configuration")
        u = entry["unit"]
        key = self.unit_key(u)
        if key is None:
            out.append(f"its unit names input {u['input']!r}, which the manifest's inputs do not list")
        elif declared.get("unit") != key:
            out.append(f"holds unit {str(declared.get('unit'))[:16]} (input {declared.get('input')}, entries "
                       f"{declared.get('entry_start')}-{declared.get('entry_stop')}), but the manifest lists unit "
                       f"{key[:16]} (input {u['input']}, entries {u['entry_start']}-{u['entry_stop']}) here")
        if key is not None and posixpath.basename(entry["path"]) != f"part-{key[:16]}.parquet":
            out.append(f"file name is not part-{key[:16]}.parquet, the name of its unit's key")
        return out


@dataclass
class Dataset:
    """A dataset whose manifest, shard paths, files and shard schemas passed :func:`open_dataset`."""

    out: OutputDir
    manifest: dict
    schema: Schema
    entries: list[dict]  # the manifest's shard entries, in order

    def path(self, i: int) -> str:
        """Filesystem path (for ``out.fs``) of shard ``i``."""
        return self.out.path(self.entries[i]["path"])

    def local_paths(self) -> list[str]:
        if not self.out.local:
            raise DatasetError(f"{self.out.url}: this reader needs a local dataset")
        return [self.path(i) for i in range(len(self.entries))]

    def verify_checksum(self, i: int) -> None:
        rel = self.entries[i]["path"]
        if self.out.sha256(rel) != self.entries[i]["sha256"]:
            raise DatasetError(f"{self.out.url}: shard {rel}: sha256 differs from the manifest's (the file changed "
                               "after it was written); run `muon-pipeline validate` to see what is wrong")


def open_dataset(directory: str, *, checksums: bool = False, shard_schemas: bool = True) -> Dataset:
    """Open a dataset for reading, or raise ``DatasetError`` (one line) naming the first problem.

    ``checksums``: verify every shard's sha256 (reads every byte). ``shard_schemas``: read every shard's
    footer and compare its declared and Arrow schema with the manifest's.
    """
    out = OutputDir(directory)
    if not out.fs.exists(out.root):
        raise DatasetError(f"{directory}: no such dataset directory")
    manifest = read_manifest(out)
    where = f"{directory}/{manifest_name(out.exists) or MANIFEST}"
    problems = manifest_problems(manifest)
    if problems:
        key, why = problems[0]
        more = f" (and {len(problems) - 1} more problem(s); run `muon-pipeline validate`)" if len(problems) > 1 else ""
        raise DatasetError(f"{where}, key {key}: {why}{more}")
    try:
        schema = load_schema(manifest["schema"]["version"])
    except SchemaError as err:
        raise DatasetError(f"{where}, key schema.version: {err}") from err
    if schema.name != manifest["schema"]["name"]:
        raise DatasetError(f"{where}, key schema.name: {manifest['schema']['name']!r} is not {schema.name!r}")
    entries = manifest["shards"]
    if not entries:
        raise DatasetError(f"{where}: the manifest lists no shards")
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        rel = entry["path"]
        why = shard_path_problem(rel)
        if why is None and rel in seen:
            why = f"listed twice in the manifest (shards[{seen[rel]}] and shards[{i}])"
        why = why or shard_file_problem(out, rel)
        if why is None and out.size(rel) != entry["bytes"]:
            why = (f"{out.size(rel)} bytes, the manifest says {entry['bytes']}: the file changed after it was "
                   "written (its sha256 cannot match the manifest's)")
        if why:
            raise DatasetError(f"{directory}: shard {rel!r} (shards[{i}]): {why}")
        seen[rel] = i
    ds = Dataset(out=out, manifest=manifest, schema=schema, entries=entries)
    if shard_schemas:
        import pyarrow.parquet as pq

        try:
            identity = Identity.of(manifest)
        except Exception as err:  # noqa: BLE001 - e.g. an input entry of the wrong shape
            raise DatasetError(f"{where}, key config/inputs: unusable ({type(err).__name__}: {err})") from err

        for i, entry in enumerate(entries):
            try:
                with out.fs.open(ds.path(i), "rb") as fh:
                    pf = pq.ParquetFile(fh)
                    arrow_schema, rows = pf.schema_arrow, pf.metadata.num_rows
            except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
                raise DatasetError(f"{directory}: shard {entry['path']}: not a readable Parquet file "
                                   f"({' '.join(str(err).split())})") from err
            found = shard_schema_problems(arrow_schema, schema)
            if found:
                _kind, column, why = found[0]
                col = f", column {column}" if column else ""
                raise DatasetError(f"{directory}: shard {entry['path']}{col}: {why}")
            found_id = identity.problems(read_identity(arrow_schema.metadata), entry)
            if found_id:
                raise DatasetError(f"{directory}: shard {entry['path']}: {found_id[0]}")
            if rows != entry["rows"]:  # free: the footer holds it
                raise DatasetError(f"{directory}: shard {entry['path']}: {rows} rows, the manifest says "
                                   f"{entry['rows']} (run `muon-pipeline validate`)")
    if checksums:
        for i in range(len(entries)):
            ds.verify_checksum(i)
    return ds


def read_dataset(directory: str, columns: list[str] | None = None, verify_checksums: bool = True):
    """The whole dataset as one ``pyarrow.Table``, shards in manifest order (for small datasets).

    Opened with :func:`open_dataset` (path rules, schema checks, and the sha256 of every shard unless
    ``verify_checksums`` is false); ``columns`` selects top-level columns (default: all). Raises
    ``DatasetError`` naming the shard, ConfigError while a writer that may delete holds the folder.

    Holds the readers' lock (:func:`pipeline.locks.reading`) while it reads; the table it returns is in
    memory, so nothing is held after. :func:`open_dataset` alone holds nothing: a caller reading the
    shards later wraps its reads in ``with pipeline.reading(directory):``.
    """
    from .locks import reading

    with reading(directory, "read_dataset"):
        return _read_all(directory, columns, verify_checksums)


def _read_all(directory: str, columns: list[str] | None, verify_checksums: bool):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = open_dataset(directory, checksums=verify_checksums)
    tables = []
    for i in range(len(ds.entries)):
        # use_threads=False: with Arrow's reader threads on a Python file object, pyarrow 26 aborted the
        # interpreter at exit ("terminate called without an active exception") in ~1 run of 5
        with ds.out.fs.open(ds.path(i), "rb") as fh:
            try:
                tables.append(pq.read_table(fh, columns=columns, use_threads=False))
            except (OSError, pa.ArrowException) as err:
                raise DatasetError(f"{directory}: shard {ds.entries[i]['path']} cannot be decoded ({one_line(err)}); "
                                   "run `muon-pipeline validate`") from err
    return pa.concat_tables(tables)
