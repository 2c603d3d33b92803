"""``validate --source N|all``: re-derive units from the raw inputs the manifest names and compare them with
the shards bit for bit.

The one check that also catches a value changed after writing with every checksum (and the statistics)
recomputed: a unit is a pure function of (input, entry range, configuration), so converting it again
gives the same bytes. Each chosen unit is converted again (``units.run_unit``, the function every executor
runs) into a temporary directory; its shard must equal the stored file byte for byte. When it does not,
the tables are compared leaf by leaf (event columns, list lengths, item fields): one ``source`` problem per
differing leaf, with its rows and a first example; else the Parquet metadata, else the encoding.

Cost: the conversion cost of the chosen units (about what ``convert`` took for them, plus reading the
shard back); the raw inputs must be readable at the paths the manifest records.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ._version import __version__
from .config import ConvertConfig
from .derive_config import is_derived
from .errors import DatasetError, InputError, PipelineError, one_line
from .extras import version_install_line
from .format import Unit
from .report import Problem, Where
from .settings import RunSettings
from .storage import OutputDir
from .units import run_unit

if TYPE_CHECKING:
    from .dataset import Identity


def pick_units(n_units: int, source: int | str) -> list[int]:
    """Indices of the units to re-derive: all, or ``source`` spread evenly over the dataset (first and
    last included), so a sample covers every region of it and the same call checks the same units."""
    if source == "all" or int(source) >= n_units:
        return list(range(n_units))
    return sorted({int(round(x)) for x in np.linspace(0, n_units - 1, int(source))})


class _Leaf(NamedTuple):
    """One leaf of a shard table, as numpy."""

    values: np.ndarray
    kind: str  # "event": one value per row; "lengths": a list column's lengths; "item": a field of its items


def _leaves(table) -> dict[Where, _Leaf]:
    """Every leaf of a shard table, by its place: an event column (``("eventNumber",)``), the lengths of a
    list column (``("hits (lengths)",)``) and each field of that column's items (``("hits", "spacePoint_x")``)."""
    import pyarrow as pa

    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type):
            offsets = np.asarray(col.offsets, dtype=np.int64)
            out[(f"{name} (lengths)",)] = _Leaf(np.diff(offsets), "lengths")
            values = col.values
            for i in range(values.type.num_fields):
                out[(name, values.type.field(i).name)] = _Leaf(values.field(i).slice(
                    int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy(zero_copy_only=False), "item")
        else:
            out[(name,)] = _Leaf(col.to_numpy(zero_copy_only=False), "event")
    return out


def _item_rows(table, column: str, index: np.ndarray) -> np.ndarray:
    """Rows (events) of the items at flat positions ``index`` of list column ``column``."""
    offsets = np.asarray(table.column(column).combine_chunks().offsets, dtype=np.int64)
    return np.searchsorted(offsets - offsets[0], index, side="right") - 1


def _compare(stored, derived, rel: str, unit: dict, add) -> None:
    """Report where the ``stored`` table of shard ``rel`` differs from the ``derived`` one (the same unit
    converted again): per leaf, the differing values and their rows; else the metadata; else the encoding."""
    what = f"differs from a re-derivation of input {unit['input']} entries {unit['entry_start']}-{unit['entry_stop']}"
    if stored.num_rows != derived.num_rows:
        add(Problem("source", f"{stored.num_rows} rows, but the raw input gives {derived.num_rows}: the shard {what}",
                    rel, ("rows",)))
    a, b = _leaves(stored), _leaves(derived)
    reported = False
    for where, leaf in b.items():
        mine = a.get(where)
        if mine is None:
            continue
        x, y = mine.values, leaf.values
        if len(x) != len(y):
            if leaf.kind != "lengths":
                continue  # reported through the lengths of its list column
            n = min(len(x), len(y))
            diff = np.flatnonzero(x[:n] != y[:n])
            rows = diff if len(diff) else np.array([n])
        else:
            same = (x == y) if x.dtype.kind != "f" else ((x == y) | (np.isnan(x) & np.isnan(y)))
            diff = np.flatnonzero(~np.asarray(same, dtype=bool))
            if not len(diff):
                continue
            rows = np.unique(_item_rows(derived, where[0], diff)) if leaf.kind == "item" else diff
        reported = True
        first = int(diff[0]) if len(diff) else 0
        example = f"e.g. {x[first]!r} where the raw input gives {y[first]!r}" if len(diff) and len(x) == len(y) else ""
        add(Problem.with_rows("source", f"{len(diff)} value(s) {what} {example}".rstrip(), rel, where, rows))
    if not reported and stored.schema.metadata != derived.schema.metadata:
        add(Problem("source", f"same values, but the Parquet metadata {what}", rel, ("metadata",)))
    elif not reported:
        add(Problem("source", f"same values, but the file's bytes differ from a re-derivation of input "
                    f"{unit['input']} (its encoding was changed after writing)", rel))


def check_sources(out: OutputDir, manifest: dict, identity: Identity | None, entries: list[dict],
                  source: int | str, add) -> int:
    """Re-derive the chosen units of ``entries`` (well-formed manifest shard entries with valid paths, each
    once) and compare; returns how many were re-derived. ``identity``: the manifest's (None when its config,
    tool_version or inputs are unusable: one problem, nothing re-derived). A dataset written by another
    tool version is not re-derived either (one problem naming the version to install)."""
    import pyarrow.parquet as pq

    if identity is None:
        add(Problem("source", "cannot re-derive units: the manifest's config, tool_version or inputs are unusable"))
        return 0
    if manifest["tool_version"] != __version__:
        add(Problem("source", f"the dataset was written by muon-pipeline {manifest['tool_version']}, this is "
                    f"{__version__}: re-derive with the same version ({version_install_line(manifest['tool_version'])})",
                    where=("tool_version",)))
        return 0
    derived = is_derived(manifest["config"])  # a filter output: re-derived from its parent and scores
    source_name = "the parent and scores" if derived else "the raw input"
    if derived:
        from .derive import rederive_job, run_filter_unit

        try:
            cfg, run = rederive_job(manifest), run_filter_unit
        except PipelineError as err:
            add(Problem("source", f"cannot re-derive units: {err}", where=("lineage",)))
            return 0
    else:
        cfg, run = ConvertConfig.from_dict(manifest["config"]), run_unit
    done = 0
    with tempfile.TemporaryDirectory(prefix="muon-validate-source-") as tmp:
        for k in pick_units(len(entries), source):
            entry = entries[k]
            u, rel = entry["unit"], entry["path"]
            key = identity.unit_key(u)
            if key is None:
                continue  # reported by the coverage check
            info = identity.inputs[u["input"]]
            uuid = (entry.get("parent_shard") or {}).get("sha256", "") if derived else info.uuid
            unit = Unit(u["index"], u["input"], u["entry_start"], u["entry_stop"], key, uuid)
            try:
                run(unit, cfg, tmp, RunSettings())
            except (InputError, DatasetError) as err:
                add(Problem("source", f"cannot re-derive from {source_name}: {err}", rel, ("unit", "input")))
                continue
            except Exception as err:  # noqa: BLE001 - e.g. the file is not ROOT any more
                add(Problem("source", f"cannot re-derive from {source_name} {u['input']}: {one_line(err)}", rel))
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
