"""Every check of a produced dataset, each reporting where it failed; never stops at the first.

Checks, in order: the manifest (readable, known schema, counts reconcile); every listed shard
(present, size, checksum, readable, declared schema and Arrow types, row/hit/muon counts);
unlisted shards; the values (finite, within the schema's ranges or allowed sets, truth links in
range, each muon with ≥ min hits, derived features equal their formulas).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from .errors import DatasetError, SchemaError
from .features import DERIVED, hit_features
from .manifest import read_manifest
from .rules import field_violations
from .schema import load_schema, schema_from_metadata
from .shards import chunk_from_table, iter_row_groups, open_parquet
from .storage import TMP_MARK, OutputDir
from .transform import LOW_EDGE
from .units import SHARDS

MAX_ROWS_PER_PROBLEM = 5


@dataclass
class Problem:
    check: str
    message: str
    shard: str | None = None
    column: str | None = None
    rows: list[int] | None = None
    count: int = 1

    def __str__(self) -> str:
        where = ", ".join(x for x in (self.shard, self.column and f"column {self.column}",
                                      self.rows and f"row(s) {self.rows}" + (" ..." if self.count > len(self.rows) else ""))
                          if x)
        return f"[{self.check}] {where + ': ' if where else ''}{self.message}"


@dataclass
class Report:
    directory: str
    problems: list[Problem]
    shards_checked: int = 0
    events_checked: int = 0
    schema_version: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"directory": self.directory, "ok": self.ok, "schema_version": self.schema_version,
                "shards_checked": self.shards_checked, "events_checked": self.events_checked,
                "problems": [asdict(p) for p in self.problems]}


def _rows(mask: np.ndarray, row_of: np.ndarray | None, first_row: int) -> tuple[list[int], int]:
    idx = np.flatnonzero(mask)
    rows = np.unique(row_of[idx] if row_of is not None else idx) + first_row
    return [int(r) for r in rows[:MAX_ROWS_PER_PROBLEM]], int(len(rows))


def _check_values(chunk, schema, min_hits: int, first_row: int, shard: str, add) -> None:
    hit_row = chunk.hit_event_index()
    muon_row = chunk.muon_event_index()
    for level, values, row_of in (("hit", chunk.hits, hit_row), ("muon", chunk.muons, muon_row)):
        column = schema.columns[level]
        for f in schema.level(level):
            # the same rules convert and migrate apply before writing (pipeline.rules)
            for kind, bad, why in field_violations(values[f.name], f):
                rows, n = _rows(bad, row_of, first_row)
                add(Problem(kind, f"{int(bad.sum())} value(s) breaking the rule, e.g. {why}", shard,
                            f"{column}.{f.name}", rows, n))
    link = chunk.hits["spacePoint_truthLink"]
    n_mu = np.diff(chunk.muon_offsets)[hit_row]
    bad = (link < -1) | (link >= n_mu)
    if bad.any():
        rows, n = _rows(bad, hit_row, first_row)
        add(Problem("truth-link", f"{int(bad.sum())} link(s) outside [-1, n_muons)", shard,
                    f"{schema.hit_column}.spacePoint_truthLink", rows, n))
    ok = (link >= 0) & ~bad
    gmuon = chunk.muon_offsets[hit_row[ok]] + link[ok]
    nhits = np.bincount(gmuon, minlength=chunk.n_muons)[: chunk.n_muons]
    bad = nhits < min_hits
    if bad.any():
        rows, n = _rows(bad, muon_row, first_row)
        add(Problem("min-hits", f"{int(bad.sum())} muon(s) with fewer than {min_hits} hits", shard,
                    schema.muon_column, rows, n))
    derived = [n for n in schema.names("hit") if n in DERIVED]
    expect = hit_features(*(chunk.hits[c] for c in LOW_EDGE), derived)
    for name in derived:
        bad = ~((expect[name] == chunk.hits[name]) | (np.isnan(expect[name]) & np.isnan(chunk.hits[name])))
        if bad.any():
            rows, n = _rows(bad, hit_row, first_row)
            add(Problem("formula", f"{int(bad.sum())} value(s) differ from {schema.field(name).formula}", shard,
                        f"{schema.hit_column}.{name}", rows, n))


def _compare_arrow(expected, actual, shard: str, add) -> bool:
    ok = True
    exp = {f.name: f for f in expected}
    act = {f.name: f for f in actual}
    for name in exp:
        if name not in act:
            add(Problem("columns", f"missing column (expected {exp[name].type})", shard, name))
            ok = False
        elif not act[name].type.equals(exp[name].type):
            ok = False
            et, at = exp[name].type, act[name].type
            detail = f"type {at}, expected {et}"
            if hasattr(et, "value_type") and hasattr(at, "value_type") and hasattr(at.value_type, "num_fields"):
                es = {f.name: f.type for f in et.value_type}
                as_ = {f.name: f.type for f in at.value_type}
                parts = [f"{k} missing" for k in es if k not in as_]
                parts += [f"{k} is {as_[k]}, expected {es[k]}" for k in es if k in as_ and as_[k] != es[k]]
                parts += [f"{k} unexpected" for k in as_ if k not in es]
                if parts:
                    detail = "; ".join(parts)
            add(Problem("types", detail, shard, name))
    for name in act:
        if name not in exp:
            add(Problem("columns", "unexpected column", shard, name))
            ok = False
    return ok


def validate_dataset(directory: str, check_values: bool = True, check_checksums: bool = True) -> Report:
    out = OutputDir(directory)
    report = Report(directory=directory, problems=[])
    add = report.problems.append
    try:
        manifest = read_manifest(out)
    except DatasetError as err:
        add(Problem("manifest", str(err)))
        return report
    try:
        version = int(manifest["schema"]["version"])
        schema = load_schema(version)
        report.schema_version = version
    except (SchemaError, KeyError, TypeError, ValueError) as err:
        add(Problem("manifest", f"unusable schema declaration {manifest.get('schema')!r}: {err}"))
        return report
    cf = manifest.get("cutflow", {})
    try:
        if cf["entries_in"] != cf["events_out"] + cf["events_cut"] + cf["entries_skipped"]:
            add(Problem("counts", f"cut flow does not reconcile: entries in {cf['entries_in']} != out "
                        f"{cf['events_out']} + cut {cf['events_cut']} + skipped {cf['entries_skipped']}"))
        if cf["events_out"] != sum(s["rows"] for s in manifest["shards"]):
            add(Problem("counts", f"cut flow says {cf['events_out']} events out but the shards list "
                        f"{sum(s['rows'] for s in manifest['shards'])} rows"))
    except (KeyError, TypeError) as err:
        add(Problem("manifest", f"incomplete cut flow or shard list: missing {err}"))
        return report
    min_hits = int(manifest.get("config", {}).get("selection", {}).get("min_hits", 0))
    expected = schema.arrow_schema()
    listed = set()
    for entry in manifest["shards"]:
        rel = entry["path"]
        listed.add(rel.rsplit("/", 1)[-1])
        if not out.exists(rel):
            add(Problem("missing", "shard listed in the manifest does not exist", rel))
            continue
        report.shards_checked += 1
        size = out.size(rel)
        if size != entry["bytes"]:
            add(Problem("size", f"{size} bytes, manifest says {entry['bytes']}", rel))
        if check_checksums and out.sha256(rel) != entry["sha256"]:
            add(Problem("checksum", "sha256 differs from the manifest (corrupted or replaced file)", rel))
        try:
            pf = open_parquet(out, rel)
            arrow_schema = pf.schema_arrow
        except Exception as err:  # pyarrow raises several types for damaged files
            add(Problem("readable", f"not a readable Parquet file: {err}", rel))
            continue
        try:
            name, declared = schema_from_metadata(arrow_schema.metadata)
            if (name, declared) != (schema.name, schema.version):
                add(Problem("version", f"shard declares {name} v{declared}, manifest {schema.name} v{schema.version}", rel))
        except SchemaError as err:
            add(Problem("version", str(err), rel))
        types_ok = _compare_arrow(expected, arrow_schema, rel, add)
        if pf.metadata.num_rows != entry["rows"]:
            add(Problem("counts", f"{pf.metadata.num_rows} rows, manifest says {entry['rows']}", rel))
        if not types_ok or not check_values:
            continue
        hits = muons = 0
        try:
            for first, table in iter_row_groups(out, rel):
                chunk = chunk_from_table(table, schema)
                hits, muons = hits + chunk.n_hits, muons + chunk.n_muons
                report.events_checked += chunk.n_events
                _check_values(chunk, schema, min_hits, first, rel, add)
        except Exception as err:
            add(Problem("readable", f"cannot decode: {err}", rel))
            continue
        if (hits, muons) != (entry["hits"], entry["muons"]):
            add(Problem("counts", f"{hits} hits / {muons} muons, manifest says {entry['hits']} / {entry['muons']}", rel))
    for name in out.listdir(SHARDS):
        if name.endswith(".parquet") and not name.startswith(TMP_MARK) and name not in listed:
            add(Problem("unlisted", "Parquet file in shards/ that the manifest does not list", f"{SHARDS}/{name}"))
    return report


def summarize(report: Report) -> str:
    """Readable report: problems grouped by check, then a verdict line."""
    lines = []
    by_check = defaultdict(list)
    for p in report.problems:
        by_check[p.check].append(p)
    for check, problems in by_check.items():
        lines.append(f"{check}: {len(problems)} problem(s)")
        lines += [f"  {p}" for p in problems]
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    lines.append(f"{report.directory}: schema v{report.schema_version}, {report.shards_checked} shard(s), "
                 f"{report.events_checked} events checked: {verdict}")
    return "\n".join(lines)

