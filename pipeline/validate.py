"""``validate``: every check of a produced dataset, each reporting where it failed. It never stops at the
first problem and never ends in a traceback (a malformed manifest is a problem like any other).

Levels, cheapest first (``muon-pipeline validate --help`` gives their costs):

* **structure** (always; reads the manifest and each shard's Parquet footer; this module): the manifest's
  shape (every key with its type), schema, cut flow and totals reconcile, the dataset id; every shard path
  (relative, inside ``shards/``, a regular file, listed once), size, declared schema and Arrow types, row
  count, and identity (the dataset and unit in the shard's own metadata equal what the manifest's config,
  tool version and input identities give, and its file name is its unit's key); the units tile every
  input's entries exactly (none missing, none twice); no stray file in ``shards/``.
* **checksums** (default; reads every byte once; this module): each shard's sha256.
* **values** (default; decodes every shard once): see :mod:`pipeline.validate_values`; here, the hit and
  muon counts per shard.
* **source** (``source=N`` or ``"all"``; reads the raw inputs again): see :mod:`pipeline.validate_source`.

Every problem goes into one :class:`~pipeline.report.Report` (:mod:`pipeline.report`, which also renders it).
"""

from __future__ import annotations

from collections import defaultdict

from .dataset import (
    Identity,
    manifest_faults,
    shard_file_fault,
    shard_path_problem,
    shard_schema_problems,
)
from .derive_config import is_derived
from .errors import ConfigError, DatasetError, SchemaError, one_line
from .format import SHARDS, TMP_MARK, read_identity
from .lineage import check_lineage
from .locks import reading
from .manifest_file import read_manifest
from .report import Problem, Report, summarize
from .schema import load_schema
from .shards import chunk_from_table, iter_row_groups, open_parquet
from .stats import StatsTable, merge_tables
from .storage import OutputDir
from .transform import chunk_stats
from .validate_values import ShardContext, check_event_numbers, check_row_group, check_statistics

__all__ = ["Problem", "Report", "summarize", "validate_dataset"]  # summarize: for the CLI


def _check_counts(manifest: dict, malformed: set[str], add) -> None:
    """The cut flow reconciles (entries in = out + cut + skipped; cut = no muon + invalid; muons in = the
    muons failing each cut + out), and the cut flow's and the totals' events, hits, muons and bytes equal
    the sums over the manifest's shard entries. ``malformed``: top-level keys too broken to read."""
    shards = [s for s in manifest.get("shards", []) if isinstance(s, dict)]

    def total(key: str) -> int:
        return sum(s[key] for s in shards if isinstance(s.get(key), int))

    if "cutflow" not in malformed:
        cf = manifest["cutflow"]
        capped, muons_capped = cf.get("events_capped", 0), cf.get("muons_capped", 0)  # filter's caps (derived)
        for lhs, rhs, text in (
                (cf["entries_in"], cf["events_out"] + cf["events_cut"] + cf["entries_skipped"],
                 f"entries in {cf['entries_in']} != out {cf['events_out']} + cut {cf['events_cut']} + skipped "
                 f"{cf['entries_skipped']}"),
                (cf["events_cut"], cf["events_no_muon"] + cf["events_invalid"] + capped,
                 f"events cut {cf['events_cut']} != no muon {cf['events_no_muon']} + invalid {cf['events_invalid']}"
                 + (f" + capped {capped}" if capped else "")),
                (cf["muons_in"], cf["muons_fail_pt"] + cf["muons_fail_eta"] + cf["muons_fail_hits"] + cf["muons_out"]
                 + muons_capped,
                 f"muons in {cf['muons_in']} != fail pT {cf['muons_fail_pt']} + fail eta {cf['muons_fail_eta']} + "
                 f"fail hits {cf['muons_fail_hits']} + out {cf['muons_out']}"
                 + (f" + in capped events {muons_capped}" if muons_capped else ""))):
            # muons of events dropped as invalid are counted in no muon counter: then only in >= the sum
            if lhs != rhs and not (text.startswith("muons") and cf["events_invalid"] and lhs > rhs):
                add(Problem("counts", f"cut flow does not reconcile: {text}", where=("cutflow",)))
        for key, col in (("events_out", "rows"), ("muons_out", "muons"), ("hits_out", "hits")):
            if key in cf and cf[key] != total(col):
                add(Problem("counts", f"cut flow says {cf[key]} {key.split('_')[0]} out but the shards list "
                            f"{total(col)}", where=("cutflow", key)))
    if "totals" not in malformed:
        for key, col in (("events", "rows"), ("hits", "hits"), ("muons", "muons"), ("bytes", "bytes")):
            if manifest["totals"][key] != total(col):
                add(Problem("counts", f"totals say {manifest['totals'][key]} {key}, the shards list {total(col)}",
                            where=("totals", key)))


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
            add(Problem("manifest", f"malformed skipped unit record {rec!r:.80}", where=("skipped", "units")))
    for path in sorted(set(have) - set(identity.inputs)):
        add(Problem("coverage", f"shard(s) of input {path!r}, which the manifest's inputs do not list",
                    have[path][0][2], ("unit", "input")))
    for path, info in identity.inputs.items():
        units = sorted(have.get(path, []))
        at = 0
        for start, stop, rel in units:
            shard = rel if rel != "(skipped unit)" else None
            if start < at:
                add(Problem("duplicate", f"entries {start}-{min(stop, at)} of input {path} are in more than one unit "
                            f"({rel} and an earlier one)", shard, ("unit",)))
            elif start > at:
                add(Problem("coverage", f"entries {at}-{start} of input {path} are in no shard and no skipped unit "
                            "(a shard dropped from the manifest?)", where=("shards",)))
            if not (0 <= start < stop <= info.entries) or stop - start > step:
                add(Problem("coverage", f"unit entries {start}-{stop} of input {path} are not a planned unit "
                            f"(at most {step} entries within 0-{info.entries})", shard, ("unit",)))
            at = max(at, stop)
        if at < info.entries:
            add(Problem("coverage", f"entries {at}-{info.entries} of input {path} are in no shard and no skipped "
                        "unit (a shard dropped from the manifest?)", where=("shards",)))


def validate_dataset(directory: str, check_values: bool = True, check_checksums: bool = True,
                     source: int | str | None = None) -> Report:
    """Check a dataset at the levels asked for; every problem found is in the report.

    ``source``: re-derive N units (an int) or ``"all"`` from the raw inputs and compare bit for bit.
    Raises ``ConfigError`` (exit 2) only when ``directory`` does not exist or a writer that may delete
    holds it; the readers' lock (:func:`pipeline.locks.reading`) is held while it checks.
    """
    out = OutputDir(directory)
    if not out.fs.exists(out.root):
        raise ConfigError(f"{directory}: no such directory")
    if not out.fs.isdir(out.root):
        raise ConfigError(f"{directory} is a file, not a dataset directory (give the folder that holds _manifest.json)")
    report = Report(directory=directory, problems=[])
    report.levels = ["structure"] + (["checksums"] if check_checksums else []) + (["values"] if check_values else [])
    if source is not None:
        report.levels.append(f"source {source}")
    with reading(directory, "validate"):  # no writer deletes what is checked (--source included)
        _check(out, report, check_values, check_checksums, source)
    return report


def _check(out: OutputDir, report: Report, check_values: bool, check_checksums: bool, source) -> None:
    try:
        _validate(out, report, check_values, check_checksums, source)
    except Exception as err:  # noqa: BLE001 - a report, never a traceback; this is a bug to report
        report.problems.append(Problem("internal", f"validation stopped early: {one_line(err)} (please report it)"))


def _validate(out: OutputDir, report: Report, check_values: bool, check_checksums: bool, source) -> None:
    add = report.problems.append
    try:
        manifest = read_manifest(out)
    except DatasetError as err:
        add(Problem("manifest", str(err)))
        return
    found = manifest_faults(manifest)
    for where, why in found:
        add(Problem("manifest", why, where=where))
    malformed = {where[0] for where, _ in found}  # top-level keys that are unusable
    bad_shards = {where[1] for where, _ in found if where[0] == "shards" and len(where) > 1}  # malformed entries
    if "schema" in malformed:
        return
    try:
        schema = load_schema(manifest["schema"]["version"])
        if schema.name != manifest["schema"]["name"]:
            raise SchemaError(f"schema name {manifest['schema']['name']!r} is not {schema.name!r}")
        report.schema_version = schema.version
    except SchemaError as err:
        add(Problem("manifest", f"unusable schema declaration: {err}", where=("schema",)))
        return
    if "shards" in malformed and not isinstance(manifest.get("shards"), list):
        return
    _check_counts(manifest, malformed, add)
    identity = None
    if not malformed & {"config", "tool_version", "inputs"}:
        identity = Identity.of(manifest)
        if "dataset_id" in manifest and manifest["dataset_id"] != identity.dataset:
            add(Problem("identity", f"dataset_id {manifest['dataset_id']!r} is not {identity.dataset!r}, the id of "
                        "the manifest's config and tool_version (one of them was edited)", where=("dataset_id",)))
    if "config" not in malformed and is_derived(manifest["config"]):
        check_lineage(manifest, add)  # parent and scores reachable, as the lineage records them
    selection = None if "config" in malformed else manifest["config"]["selection"]
    entries = manifest["shards"]
    good = [i for i in range(len(entries)) if i not in bad_shards]
    if identity is not None:
        _check_coverage(manifest, identity, good, add)
        for k, doc in enumerate(manifest["inputs"]):
            rows = sum(entries[i]["rows"] for i in good if entries[i]["unit"]["input"] == doc["path"])
            if isinstance(doc.get("events_out"), int) and doc["events_out"] != rows:
                add(Problem("counts", f"input {doc['path']} says {doc['events_out']} events out, its shards list "
                            f"{rows}", where=("inputs", k, "events_out")))
    listed: dict[str, int] = {}
    stats: StatsTable = {}
    per_input: dict[str, list[tuple[str, ShardContext]]] = defaultdict(list)
    for i in good:
        entry = entries[i]
        rel = entry["path"]
        why = shard_path_problem(rel)
        if why:
            add(Problem("path", why, repr(rel), ("shards", i, "path")))
            continue
        if rel in listed:
            add(Problem("duplicate", f"listed twice in the manifest (shards[{listed[rel]}] and shards[{i}])", rel,
                        ("shards", i)))
            continue
        listed[rel] = i
        fault = shard_file_fault(out, rel)
        if fault:
            kind, why = fault
            add(Problem(kind, why, rel))
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
        check_event_numbers(per_input, add)
        if report.shards_checked == len(entries) and not any(p.check in ("readable", "types", "columns")
                                                             for p in report.problems):
            check_statistics(manifest, stats, add)
    if source is not None:
        from .validate_source import check_sources

        report.source_units_checked = check_sources(out, manifest, identity, [entries[i] for i in good
                                                                              if entries[i]["path"] in listed],
                                                    source, add)


def _check_shard(out: OutputDir, entry: dict, schema, identity: Identity | None, selection: dict | None,
                 check_values: bool, check_checksums: bool, report: Report, per_input) -> StatsTable | None:
    """One shard's checks: size and sha256 against its manifest entry, its footer (schema, identity, row
    count) and, with ``check_values``, every value (:mod:`pipeline.validate_values`) and its hit and muon
    counts. Returns its recomputed statistics (None when its values were not read, or not all of them)."""
    add = report.problems.append
    rel = entry["path"]
    size = out.size(rel)
    if size != entry["bytes"]:
        add(Problem("size", f"{size} bytes, manifest says {entry['bytes']}", rel, ("bytes",)))
    if check_checksums and out.sha256(rel) != entry["sha256"]:
        add(Problem("checksum", "sha256 differs from the manifest (corrupted or replaced file)", rel, ("sha256",)))
    try:
        pf = open_parquet(out, rel)
        arrow_schema = pf.schema_arrow
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
        add(Problem("readable", f"not a readable Parquet file: {one_line(err)}", rel))
        return None
    schema_found = shard_schema_problems(arrow_schema, schema)
    for kind, column, why in schema_found:
        add(Problem(kind, why, rel, (column,) if column else ()))
    types_ok = not any(kind in ("columns", "types") for kind, _, _ in schema_found)
    if identity is not None:
        for why in identity.problems(read_identity(arrow_schema.metadata), entry):
            add(Problem("identity", why, rel, ("metadata muon_pipeline.shard",)))
    if pf.metadata.num_rows != entry["rows"]:
        add(Problem("counts", f"{pf.metadata.num_rows} rows, manifest says {entry['rows']}", rel, ("rows",)))
    if not types_ok or not check_values:
        return None
    ctx = ShardContext(rel, entry["unit"], selection)
    hits = muons = 0
    shard_stats: StatsTable = {}
    try:
        for first, table in iter_row_groups(out, rel):
            chunk = chunk_from_table(table, schema)
            hits, muons = hits + chunk.n_hits, muons + chunk.n_muons
            report.events_checked += chunk.n_events
            check_row_group(chunk, table, schema, ctx, first, add)
            if chunk.n_events:
                shard_stats = merge_tables(shard_stats, chunk_stats(chunk, schema))
    except Exception as err:  # noqa: BLE001 - a damaged page: reported with the shard
        add(Problem("readable", f"cannot decode: {one_line(err)}", rel))
        return None
    per_input[entry["unit"]["input"]].append((rel, ctx))
    if (hits, muons) != (entry["hits"], entry["muons"]):
        add(Problem("counts", f"{hits} hits / {muons} muons, manifest says {entry['hits']} / {entry['muons']}", rel,
                    ("hits/muons",)))
    return shard_stats
