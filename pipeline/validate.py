"""Every check of a produced dataset, each reporting where it failed; never stops at the first and never
ends in a traceback (a malformed manifest is a problem like any other).

Levels, cheapest first (``muon-pipeline validate --help`` gives their costs):

* **structure** (always; reads the manifest and each shard's Parquet footer): the manifest's shape (every
  key with its type), schema, cut flow and totals reconcile, the dataset id; every shard path (relative,
  inside ``shards/``, a regular file, listed once), size, declared schema and Arrow types, row count, and
  identity (the dataset and unit in the shard's own metadata equal what the manifest's config, tool version
  and input identities give, and its file name is its unit's key); the units tile every input's entries
  exactly (none missing, none twice); no stray file in ``shards/``.
* **checksums** (default; reads every byte once): each shard's sha256.
* **values** (default; decodes every shard once): finite, schema ranges and allowed sets; truth links in
  range; the configuration's cuts hold for every muon (pT ≥ min_pt, |η| ≤ max_abs_eta, ≥ min_hits hits of
  the kept technologies) and no event is without a muon unless kept on purpose; derived fields equal their
  formulas (r, s, θ, φ, η from the Low edge; q/pT = q/pT); every event's ``source_file`` is its unit's input,
  ``source_entry`` strictly increasing inside the unit's entry range, eventNumber unique per input; hit and
  muon counts per shard; the manifest statistics equal those recomputed from the shards (bit for bit).
* **source** (``source=N`` or ``"all"``; reads the raw inputs again): see :mod:`pipeline.validate_source`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from .dataset import (
    Identity,
    manifest_problems,
    shard_file_problem,
    shard_path_problem,
    shard_schema_problems,
)
from .errors import ConfigError, DatasetError, SchemaError, one_line
from .features import DERIVED, hit_features, truth_qpt
from .format import SHARDS, read_identity
from .manifest import read_manifest
from .rules import field_violations
from .schema import load_schema
from .selection import SelectionConfig
from .shards import chunk_from_table, iter_row_groups, open_parquet
from .stats import merge_tables
from .storage import TMP_MARK, OutputDir
from .transform import LOW_EDGE, chunk_stats

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
    levels: list[str] = field(default_factory=list)
    source_units_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"directory": self.directory, "ok": self.ok, "schema_version": self.schema_version,
                "levels": self.levels, "shards_checked": self.shards_checked, "events_checked": self.events_checked,
                "source_units_checked": self.source_units_checked,
                "problems": [asdict(p) for p in self.problems]}


def _rows(mask: np.ndarray, row_of: np.ndarray | None, first_row: int) -> tuple[list[int], int]:
    idx = np.flatnonzero(mask)
    rows = np.unique(row_of[idx] if row_of is not None else idx) + first_row
    return [int(r) for r in rows[:MAX_ROWS_PER_PROBLEM]], int(len(rows))


@dataclass
class _ShardContext:
    """What the values of one shard must agree with."""

    rel: str
    unit: dict  # the manifest's unit (input, entry_start, entry_stop)
    selection: dict | None  # the manifest's configured selection (None: config unusable)
    last_entry: int = -1  # source_entry of the previous row, across row groups
    events: list[np.ndarray] = field(default_factory=list)  # eventNumber per row group
    first_rows: list[int] = field(default_factory=list)


def _check_values(chunk, table, schema, ctx: _ShardContext, first_row: int, add) -> None:
    shard = ctx.rel
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
    sel = ctx.selection
    if sel is not None:
        _check_cuts(chunk, nhits, sel, schema, first_row, shard, add)
    derived = [n for n in schema.names("hit") if n in DERIVED]
    expect = hit_features(*(chunk.hits[c] for c in LOW_EDGE), derived)
    for name in derived:
        bad = ~((expect[name] == chunk.hits[name]) | (np.isnan(expect[name]) & np.isnan(chunk.hits[name])))
        if bad.any():
            rows, n = _rows(bad, hit_row, first_row)
            add(Problem("formula", f"{int(bad.sum())} value(s) differ from {schema.field(name).formula}", shard,
                        f"{schema.hit_column}.{name}", rows, n))
    if schema.has("truthMuon_qpt"):
        qpt = chunk.muons["truthMuon_qpt"]
        expect_qpt = truth_qpt(chunk.muons["truthMuon_q"], chunk.muons["truthMuon_pt"])
        bad = ~((expect_qpt == qpt) | (np.isnan(expect_qpt) & np.isnan(qpt)))
        if bad.any():
            rows, n = _rows(bad, muon_row, first_row)
            add(Problem("formula", f"{int(bad.sum())} value(s) differ from {schema.field('truthMuon_qpt').formula}",
                        shard, f"{schema.muon_column}.truthMuon_qpt", rows, n))
    _check_provenance(chunk, table, ctx, first_row, add)


def _check_cuts(chunk, nhits: np.ndarray, sel: dict, schema, first_row: int, shard: str, add) -> None:
    """The selection the manifest's configuration records holds for every stored muon and hit (the same
    comparisons, in the same dtypes, as ``selection.apply_selection``)."""
    muon_row = chunk.muon_event_index()
    hit_row = chunk.hit_event_index()
    pt, eta = chunk.muons["truthMuon_pt"], chunk.muons["truthMuon_eta"]
    # a muon no hit points to is never kept unless asked (older configurations kept them: absent key)
    min_hits = sel["min_hits"] if sel.get("keep_muons_without_hits", True) else max(sel["min_hits"], 1)
    for name, bad, why in (
            ("truthMuon_pt", ~(pt >= sel["min_pt"]), f"pT below min_pt = {sel['min_pt']:g} GeV"),
            ("truthMuon_eta", ~(np.abs(eta) <= sel["max_abs_eta"]), f"|eta| above max_abs_eta = {sel['max_abs_eta']:g}"),
            ("", nhits < min_hits, f"fewer than {min_hits} hits (config.selection.min_hits = {sel['min_hits']}"
                                   f"{'' if sel.get('keep_muons_without_hits', True) else ', and no muon without a hit'})")):
        if bad.any():
            rows, n = _rows(bad, muon_row, first_row)
            col = f"{schema.muon_column}.{name}" if name else schema.muon_column
            add(Problem("cuts" if name else "min-hits", f"{int(bad.sum())} muon(s) with {why} (config.selection)",
                        shard, col, rows, n))
    allowed = SelectionConfig.from_dict(sel).codes()  # None: every technology code is kept
    bad = (~np.isin(chunk.hits["spacePoint_technology"], allowed) if allowed is not None
           else np.zeros(len(chunk.hits["spacePoint_technology"]), dtype=bool))
    if bad.any():
        rows, n = _rows(bad, hit_row, first_row)
        add(Problem("cuts", f"{int(bad.sum())} hit(s) of technologies not in config.selection.technologies "
                    f"{list(sel['technologies'])}", shard, f"{schema.hit_column}.spacePoint_technology", rows, n))
    if not sel.get("keep_empty_events", False):
        bad = np.diff(chunk.muon_offsets) == 0
        if bad.any():
            rows, n = _rows(bad, None, first_row)
            add(Problem("cuts", f"{int(bad.sum())} event(s) without a muon, but config.selection.keep_empty_events "
                        "is false", shard, schema.muon_column, rows, n))


def _check_provenance(chunk, table, ctx: _ShardContext, first_row: int, add) -> None:
    """source_file is the unit's input; source_entry strictly increasing inside the unit's range."""
    import pyarrow.compute as pc

    shard, unit = ctx.rel, ctx.unit
    if chunk.n_events == 0:
        return
    files = table.column("source_file")
    bad = np.asarray(pc.not_equal(files, unit["input"]).to_numpy(zero_copy_only=False), dtype=bool)
    if bad.any():
        rows, n = _rows(bad, None, first_row)
        add(Problem("provenance", f"{int(bad.sum())} event(s) from another file than the unit's input "
                    f"{unit['input']}, e.g. {files[int(np.flatnonzero(bad)[0])].as_py()!r}", shard, "source_file", rows, n))
    entry = chunk.event["source_entry"]
    bad = (entry < unit["entry_start"]) | (entry >= unit["entry_stop"])
    if bad.any():
        rows, n = _rows(bad, None, first_row)
        add(Problem("provenance", f"{int(bad.sum())} source_entry value(s) outside the unit's entries "
                    f"[{unit['entry_start']}, {unit['entry_stop']})", shard, "source_entry", rows, n))
    previous = np.concatenate([[ctx.last_entry], entry[:-1]])
    bad = entry <= previous
    if bad.any():
        rows, n = _rows(bad, None, first_row)
        add(Problem("order", f"{int(bad.sum())} event(s) not in increasing source_entry order (a duplicated, "
                    "moved or shuffled row)", shard, "source_entry", rows, n))
    ctx.last_entry = int(entry[-1])
    ctx.events.append(chunk.event["eventNumber"])
    ctx.first_rows.append(first_row)


def _check_counts(manifest: dict, malformed: set[str], add) -> None:
    shards = [s for s in manifest.get("shards", []) if isinstance(s, dict)]

    def total(key: str) -> int:
        return sum(s[key] for s in shards if isinstance(s.get(key), int))

    if "cutflow" not in malformed:
        cf = manifest["cutflow"]
        for lhs, rhs, text in (
                (cf["entries_in"], cf["events_out"] + cf["events_cut"] + cf["entries_skipped"],
                 f"entries in {cf['entries_in']} != out {cf['events_out']} + cut {cf['events_cut']} + skipped "
                 f"{cf['entries_skipped']}"),
                (cf["events_cut"], cf["events_no_muon"] + cf["events_invalid"],
                 f"events cut {cf['events_cut']} != no muon {cf['events_no_muon']} + invalid {cf['events_invalid']}"),
                (cf["muons_in"], cf["muons_fail_pt"] + cf["muons_fail_eta"] + cf["muons_fail_hits"] + cf["muons_out"],
                 f"muons in {cf['muons_in']} != fail pT {cf['muons_fail_pt']} + fail eta {cf['muons_fail_eta']} + "
                 f"fail hits {cf['muons_fail_hits']} + out {cf['muons_out']}")):
            # muons of events dropped as invalid are counted in no muon counter: then only in >= the sum
            if lhs != rhs and not (text.startswith("muons") and cf["events_invalid"] and lhs > rhs):
                add(Problem("counts", f"cut flow does not reconcile: {text}", column="cutflow"))
        for key, col in (("events_out", "rows"), ("muons_out", "muons"), ("hits_out", "hits")):
            if key in cf and cf[key] != total(col):
                add(Problem("counts", f"cut flow says {cf[key]} {key.split('_')[0]} out but the shards list "
                            f"{total(col)}", column=f"cutflow.{key}"))
    if "totals" not in malformed:
        for key, col in (("events", "rows"), ("hits", "hits"), ("muons", "muons"), ("bytes", "bytes")):
            if manifest["totals"][key] != total(col):
                add(Problem("counts", f"totals say {manifest['totals'][key]} {key}, the shards list {total(col)}",
                            column=f"totals.{key}"))


def _check_coverage(manifest: dict, identity: Identity, good: list[int], add) -> None:
    """The units (shards and skipped units) tile each input's entries [0, entries) once each: sorted by
    start, each begins where the previous one ended, none is longer than ``shard_events`` entries. Units
    are cut by entries and by bytes (``pipeline.sizing``), so their lengths vary; the tiling does not."""
    step = int(manifest["config"]["shard_events"])
    have: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for i in good:
        u = manifest["shards"][i]["unit"]
        have[u["input"]].append((u["entry_start"], u["entry_stop"], manifest["shards"][i]["path"]))
    skipped = manifest.get("skipped", {})
    for rec in (skipped.get("units", []) if isinstance(skipped, dict) else []):
        try:  # finalize writes {path, entry_start, entry_stop, reason}; {unit: {...}} is read too
            u = rec["unit"] if "unit" in rec else {"input": rec["path"], **rec}
            have[u["input"]].append((int(u["entry_start"]), int(u["entry_stop"]), "(skipped unit)"))
        except (KeyError, TypeError, ValueError):
            add(Problem("manifest", f"malformed skipped unit record {rec!r:.80}", column="skipped.units"))
    for path in sorted(set(have) - set(identity.inputs)):
        add(Problem("coverage", f"shard(s) of input {path!r}, which the manifest's inputs do not list",
                    have[path][0][2], "unit.input"))
    for path, info in identity.inputs.items():
        units = sorted(have.get(path, []))
        at = 0
        for start, stop, rel in units:
            shard = rel if rel != "(skipped unit)" else None
            if start < at:
                add(Problem("duplicate", f"entries {start}-{min(stop, at)} of input {path} are in more than one unit "
                            f"({rel} and an earlier one)", shard, "unit"))
            elif start > at:
                add(Problem("coverage", f"entries {at}-{start} of input {path} are in no shard and no skipped unit "
                            "(a shard dropped from the manifest?)", column="shards"))
            if not (0 <= start < stop <= info.entries) or stop - start > step:
                add(Problem("coverage", f"unit entries {start}-{stop} of input {path} are not a planned unit "
                            f"(at most {step} entries within 0-{info.entries})", shard, "unit"))
            at = max(at, stop)
        if at < info.entries:
            add(Problem("coverage", f"entries {at}-{info.entries} of input {path} are in no shard and no skipped "
                        "unit (a shard dropped from the manifest?)", column="shards"))


def _check_statistics(manifest: dict, stats: dict, add) -> None:
    """Manifest statistics equal those recomputed from the shards (per row group, merged in order, as
    convert computes them: bit for bit)."""
    recorded = manifest.get("statistics")
    if not isinstance(recorded, dict):
        add(Problem("statistics", "the manifest has no statistics (the trainer normalises with them)",
                    column="statistics"))
        return
    for col in sorted(set(recorded) | set(stats)):
        rec, got = recorded.get(col, {}), stats.get(col, {})
        if not isinstance(rec, dict):
            add(Problem("statistics", "not an object", column=f"statistics.{col}"))
            continue
        for name in list(got) + [n for n in rec if n not in got]:
            key = f"statistics.{col}.{name}"
            if name not in got:
                add(Problem("statistics", "recorded for a field the shards do not hold", column=key))
                continue
            want = got[name].to_dict()
            have = rec.get(name)
            if not isinstance(have, dict):
                add(Problem("statistics", "missing from the manifest", column=key))
                continue
            wrong = []
            for k, v in want.items():
                h = have.get(k)
                same = isinstance(h, int | float) and (h == v or (np.isnan(h) and np.isnan(v)))
                if not same:
                    wrong.append(f"{k} {h!r} (recomputed {v!r})")
            if wrong:
                add(Problem("statistics", "differs from the shards: " + ", ".join(wrong[:3]), column=key))


def _check_event_numbers(per_input: dict[str, list[tuple[str, _ShardContext]]], add) -> None:
    """eventNumber unique within each input file (the split hashes it; a duplicate is a duplicated event)."""
    for path, shards in per_input.items():
        parts: list[np.ndarray] = []
        where: list[tuple[str, int, int]] = []  # (shard, first row, events) of each part
        for rel, ctx in shards:
            for ev, first in zip(ctx.events, ctx.first_rows, strict=True):
                parts.append(ev)
                where.append((rel, first, len(ev)))
        if not parts:
            continue
        ev = np.concatenate(parts)
        order = np.argsort(ev, kind="stable")
        dup = np.flatnonzero(ev[order][1:] == ev[order][:-1]) + 1
        if not len(dup):
            continue
        # locate: the shard and row of each repeated occurrence
        bounds = np.cumsum([0] + [n for _, _, n in where])
        by_shard: dict[str, list[int]] = defaultdict(list)
        for pos in order[dup]:
            k = int(np.searchsorted(bounds, pos, side="right")) - 1
            rel, first, _ = where[k]
            by_shard[rel].append(first + int(pos - bounds[k]))
        values = np.unique(ev[order[dup]])
        for rel, rows in by_shard.items():
            rows = sorted(rows)
            add(Problem("duplicate", f"{len(values)} eventNumber value(s) occur more than once in input {path}, "
                        f"e.g. {int(values[0])}", rel, "eventNumber", rows[:MAX_ROWS_PER_PROBLEM], len(rows)))


def validate_dataset(directory: str, check_values: bool = True, check_checksums: bool = True,
                     source: int | str | None = None) -> Report:
    """Check a dataset at the levels asked for; every problem found is in the report.

    ``source``: re-derive N units (an int) or ``"all"`` from the raw inputs and compare bit for bit.
    Raises ``ConfigError`` (exit 2) only when ``directory`` does not exist.
    """
    out = OutputDir(directory)
    if not out.fs.exists(out.root):
        raise ConfigError(f"{directory}: no such directory")
    if not out.fs.isdir(out.root):
        raise ConfigError(f"{directory} is a file, not a dataset directory (give the folder that holds manifest.json)")
    report = Report(directory=directory, problems=[])
    report.levels = ["structure"] + (["checksums"] if check_checksums else []) + (["values"] if check_values else [])
    if source is not None:
        report.levels.append(f"source {source}")
    try:
        _validate(out, report, check_values, check_checksums, source)
    except Exception as err:  # noqa: BLE001 - a report, never a traceback; this is a bug to report
        report.problems.append(Problem("internal", f"validation stopped early: {one_line(err)} (please report it)"))
    return report


def _validate(out: OutputDir, report: Report, check_values: bool, check_checksums: bool, source) -> None:
    add = report.problems.append
    try:
        manifest = read_manifest(out)
    except DatasetError as err:
        add(Problem("manifest", str(err)))
        return
    found = manifest_problems(manifest)
    for key, why in found:
        add(Problem("manifest", why, column=key))
    malformed = {re.split(r"[.\[]", key)[0] for key, _ in found}
    bad_shards = {int(m.group(1)) for key, _ in found if (m := re.match(r"shards\[(\d+)\]", key))}
    if "schema" in malformed:
        return
    try:
        schema = load_schema(manifest["schema"]["version"])
        if schema.name != manifest["schema"]["name"]:
            raise SchemaError(f"schema name {manifest['schema']['name']!r} is not {schema.name!r}")
        report.schema_version = schema.version
    except SchemaError as err:
        add(Problem("manifest", f"unusable schema declaration: {err}", column="schema"))
        return
    if "shards" in malformed and not isinstance(manifest.get("shards"), list):
        return
    _check_counts(manifest, malformed, add)
    identity = None
    if not malformed & {"config", "tool_version", "inputs"}:
        identity = Identity.of(manifest)
        if "dataset_id" in manifest and manifest["dataset_id"] != identity.dataset:
            add(Problem("identity", f"dataset_id {manifest['dataset_id']!r} is not {identity.dataset!r}, the id of "
                        "the manifest's config and tool_version (one of them was edited)", column="dataset_id"))
    selection = None if "config" in malformed else manifest["config"]["selection"]
    entries = manifest["shards"]
    good = [i for i in range(len(entries)) if i not in bad_shards]
    if identity is not None:
        _check_coverage(manifest, identity, good, add)
        for k, doc in enumerate(manifest["inputs"]):
            rows = sum(entries[i]["rows"] for i in good if entries[i]["unit"]["input"] == doc["path"])
            if isinstance(doc.get("events_out"), int) and doc["events_out"] != rows:
                add(Problem("counts", f"input {doc['path']} says {doc['events_out']} events out, its shards list "
                            f"{rows}", column=f"inputs[{k}].events_out"))
    listed: dict[str, int] = {}
    stats: dict = {}
    per_input: dict[str, list[tuple[str, _ShardContext]]] = defaultdict(list)
    for i in good:
        entry = entries[i]
        rel = entry["path"]
        why = shard_path_problem(rel)
        if why:
            add(Problem("path", why, repr(rel), column=f"shards[{i}].path"))
            continue
        if rel in listed:
            add(Problem("duplicate", f"listed twice in the manifest (shards[{listed[rel]}] and shards[{i}])", rel,
                        column=f"shards[{i}]"))
            continue
        listed[rel] = i
        why = shard_file_problem(out, rel)
        if why:
            add(Problem("missing" if "does not exist" in why else "path", why, rel))
            continue
        report.shards_checked += 1
        shard_stats = _check_shard(out, entry, schema, identity, selection, check_values, check_checksums, report,
                                   per_input)
        if shard_stats is not None:
            stats = merge_tables(stats, shard_stats)  # unit by unit, in manifest order, as finalize merges
    for name in out.listdir(SHARDS):
        if f"{SHARDS}/{name}" not in listed:
            kind = "temporary file of an interrupted writer" if name.startswith(TMP_MARK) else "file"
            add(Problem("unlisted", f"{kind} in {SHARDS}/ that the manifest does not list", f"{SHARDS}/{name}"))
    if check_values:
        _check_event_numbers(per_input, add)
        if report.shards_checked == len(entries) and not any(p.check in ("readable", "types", "columns")
                                                             for p in report.problems):
            _check_statistics(manifest, stats, add)
    if source is not None:
        from .validate_source import check_sources

        report.source_units_checked = check_sources(out, manifest, identity, [entries[i] for i in good
                                                                              if entries[i]["path"] in listed],
                                                    source, add)


def _check_shard(out: OutputDir, entry: dict, schema, identity: Identity | None, selection: dict | None,
                 check_values: bool, check_checksums: bool, report: Report, per_input) -> dict | None:
    """One shard's checks; returns its recomputed statistics (None when values were not read)."""
    add = report.problems.append
    rel = entry["path"]
    size = out.size(rel)
    if size != entry["bytes"]:
        add(Problem("size", f"{size} bytes, manifest says {entry['bytes']}", rel, column="bytes"))
    if check_checksums and out.sha256(rel) != entry["sha256"]:
        add(Problem("checksum", "sha256 differs from the manifest (corrupted or replaced file)", rel, column="sha256"))
    try:
        pf = open_parquet(out, rel)
        arrow_schema = pf.schema_arrow
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
        add(Problem("readable", f"not a readable Parquet file: {one_line(err)}", rel))
        return None
    schema_found = shard_schema_problems(arrow_schema, schema)
    for kind, column, why in schema_found:
        add(Problem(kind, why, rel, column))
    types_ok = not any(kind in ("columns", "types") for kind, _, _ in schema_found)
    if identity is not None:
        for why in identity.problems(read_identity(arrow_schema.metadata), entry):
            add(Problem("identity", why, rel, "metadata muon_pipeline.shard"))
    if pf.metadata.num_rows != entry["rows"]:
        add(Problem("counts", f"{pf.metadata.num_rows} rows, manifest says {entry['rows']}", rel, "rows"))
    if not types_ok or not check_values:
        return None
    ctx = _ShardContext(rel, entry["unit"], selection)
    hits = muons = 0
    shard_stats: dict = {}
    try:
        for first, table in iter_row_groups(out, rel):
            chunk = chunk_from_table(table, schema)
            hits, muons = hits + chunk.n_hits, muons + chunk.n_muons
            report.events_checked += chunk.n_events
            _check_values(chunk, table, schema, ctx, first, add)
            if chunk.n_events:
                shard_stats = merge_tables(shard_stats, chunk_stats(chunk, schema))
    except Exception as err:  # noqa: BLE001 - a damaged page: reported with the shard
        add(Problem("readable", f"cannot decode: {one_line(err)}", rel))
        return None
    per_input[entry["unit"]["input"]].append((rel, ctx))
    if (hits, muons) != (entry["hits"], entry["muons"]):
        add(Problem("counts", f"{hits} hits / {muons} muons, manifest says {entry['hits']} / {entry['muons']}", rel,
                    "hits/muons"))
    return shard_stats


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
    source = f", {report.source_units_checked} unit(s) re-derived from the raw inputs" if any(
        lv.startswith("source") for lv in report.levels) else ""
    lines.append(f"{report.directory}: schema v{report.schema_version}, {report.shards_checked} shard(s), "
                 f"{report.events_checked} events checked{source} [{', '.join(report.levels)}]: {verdict}")
    return "\n".join(lines)

