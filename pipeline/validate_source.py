"""``validate --source N|all``: re-derive units from the raw inputs the manifest names and compare them with
the shards bit for bit.

The one check that also catches a value changed after writing with every checksum (and the statistics)
recomputed: a unit is a pure function of (input, entry range, configuration), so converting it again
gives the same bytes. Each chosen unit is converted again (``units.run_unit``, the function every executor
runs) into a temporary directory; its shard must equal the stored file byte for byte. When it does not,
the tables are compared column by column to name the first differing column and rows.

Cost: the conversion cost of the chosen units (about what ``convert`` took for them, plus reading the
shard back); the raw inputs must be readable at the paths the manifest records.
"""

from __future__ import annotations

import tempfile

import numpy as np

from ._version import __version__
from .config import ConvertConfig
from .errors import InputError, one_line
from .format import Unit
from .settings import RunSettings
from .storage import OutputDir
from .units import run_unit

MAX_ROWS = 5


def pick_units(n_units: int, source: int | str) -> list[int]:
    """Indices of the units to re-derive: all, or ``source`` spread evenly over the dataset (first and
    last included), so a sample covers every region of it and the same call checks the same units."""
    if source == "all" or int(source) >= n_units:
        return list(range(n_units))
    return sorted({int(round(x)) for x in np.linspace(0, n_units - 1, int(source))})


def _flat_columns(table) -> dict[str, np.ndarray]:
    """Every leaf of a shard table as numpy: event columns, list offsets, struct children."""
    import pyarrow as pa

    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type):
            offsets = np.asarray(col.offsets, dtype=np.int64)
            out[f"{name} (lengths)"] = np.diff(offsets)
            values = col.values
            for i in range(values.type.num_fields):
                out[f"{name}.{values.type.field(i).name}"] = values.field(i).slice(
                    int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy(zero_copy_only=False)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _row_of(table, column: str, index: np.ndarray) -> np.ndarray:
    """Rows (events) of flat positions ``index`` of ``column`` (a struct child or an event column)."""
    name = column.split(".")[0].split(" ")[0]
    if "." not in column:
        return index
    offsets = np.asarray(table.column(name).combine_chunks().offsets, dtype=np.int64)
    return np.searchsorted(offsets - offsets[0], index, side="right") - 1


def _compare(stored, derived, rel: str, unit: dict, add) -> None:
    from .validate import Problem

    what = f"differs from a re-derivation of input {unit['input']} entries {unit['entry_start']}-{unit['entry_stop']}"
    if stored.num_rows != derived.num_rows:
        add(Problem("source", f"{stored.num_rows} rows, but the raw input gives {derived.num_rows}: the shard {what}",
                    rel, "rows"))
    a, b = _flat_columns(stored), _flat_columns(derived)
    reported = False
    for column in b:
        x, y = a.get(column), b[column]
        if x is None:
            continue
        if len(x) != len(y):
            if not column.endswith("(lengths)"):
                continue  # reported through the lengths of its list column
            n = min(len(x), len(y))
            diff = np.flatnonzero(x[:n] != y[:n])
            rows = diff if len(diff) else np.array([n])
        else:
            same = (x == y) if x.dtype.kind != "f" else ((x == y) | (np.isnan(x) & np.isnan(y)))
            diff = np.flatnonzero(~np.asarray(same, dtype=bool))
            if not len(diff):
                continue
            rows = diff if column.endswith("(lengths)") else np.unique(_row_of(derived, column, diff))
        reported = True
        first = int(diff[0]) if len(diff) else 0
        example = f"e.g. {x[first]!r} where the raw input gives {y[first]!r}" if len(diff) and len(x) == len(y) else ""
        add(Problem("source", f"{len(diff)} value(s) {what} {example}".rstrip(), rel, column,
                    [int(r) for r in rows[:MAX_ROWS]], int(len(rows))))
    if not reported and stored.schema.metadata != derived.schema.metadata:
        add(Problem("source", f"same values, but the Parquet metadata {what}", rel, "metadata"))
    elif not reported:
        add(Problem("source", f"same values, but the file's bytes differ from a re-derivation of input "
                    f"{unit['input']} (its encoding was changed after writing)", rel))


def check_sources(out: OutputDir, manifest: dict, identity, entries: list[dict], source: int | str, add) -> int:
    """Re-derive the chosen units of ``entries`` and compare; returns how many were re-derived."""
    import pyarrow.parquet as pq

    from .validate import Problem

    if identity is None:
        add(Problem("source", "cannot re-derive units: the manifest's config, tool_version or inputs are unusable"))
        return 0
    if manifest["tool_version"] != __version__:
        add(Problem("source", f"the dataset was written by muon-pipeline {manifest['tool_version']}, this is "
                    f"{__version__}: re-derive with the same version (pip install muon-pipeline=="
                    f"{manifest['tool_version']})", column="tool_version"))
        return 0
    cfg = ConvertConfig.from_dict(manifest["config"])
    done = 0
    with tempfile.TemporaryDirectory(prefix="muon-validate-source-") as tmp:
        for k in pick_units(len(entries), source):
            entry = entries[k]
            u, rel = entry["unit"], entry["path"]
            key = identity.unit_key(u)
            if key is None:
                continue  # reported by the coverage check
            info = identity.inputs[u["input"]]
            unit = Unit(u["index"], u["input"], u["entry_start"], u["entry_stop"], key, info.uuid)
            try:
                run_unit(unit, cfg, tmp, RunSettings())
            except InputError as err:
                add(Problem("source", f"cannot re-derive from the raw input: {err}", rel, "unit.input"))
                continue
            except Exception as err:  # noqa: BLE001 - e.g. the file is not ROOT any more
                add(Problem("source", f"cannot re-derive from the raw input {u['input']}: {one_line(err)}", rel))
                continue
            done += 1
            derived = OutputDir(tmp)
            if derived.sha256(unit.shard) == out.sha256(rel):
                continue
            try:
                stored = pq.read_table(out.fs.open(out.path(rel), "rb"))
            except Exception as err:  # noqa: BLE001 - reported by the readable check too
                add(Problem("source", f"differs from its re-derivation and cannot be read: {one_line(err)}", rel))
                continue
            _compare(stored, pq.read_table(derived.path(unit.shard)), rel, u, add)
    return done
