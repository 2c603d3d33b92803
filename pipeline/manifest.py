"""The dataset manifest: assembled from the plan and the unit records, never edited in place.

``finalize`` is the only writer of ``_manifest.json`` (``format.MANIFEST``). It runs at the end of ``convert`` and as
``muon-pipeline finalize DIR`` after a job array; it refuses (listing them) while units are
missing, and it checks the bookkeeping identity

    entries in = events out + events cut + entries skipped

before writing anything.
"""

from __future__ import annotations

import copy
import json

from .derive_config import is_derived
from .errors import DatasetError
from .format import (
    LEGACY_MANIFEST,
    MANIFEST,
    RECORDS,
    SHARDS,
    TMP_MARK,
)
from .plan import Plan, finished_records, shard_totals, timing_block
from .selection import CutFlow
from .stats import merge_tables, table_from_json, table_to_json
from .storage import OutputDir


def finalize(out: OutputDir) -> dict:
    """Write ``_manifest.json`` from the plan and all unit records; returns the manifest (see :func:`finalize_status`)."""
    return finalize_status(out)[0]


def finalize_status(out: OutputDir) -> tuple[dict, bool]:
    """Write ``_manifest.json`` from the plan and all unit records, unless the one there already says the same;
    returns ``(manifest, written)``.

    A manifest equal in all but its ``timing`` block, in a folder with nothing to clean up (no stale shard,
    no temporary, no manifest under its old name), is left as it is (``written`` False): re-running a
    finished convert or finalize changes nothing, so it also succeeds on a read-only published dataset.
    """
    manifest = _assemble(out)
    keep = {s["path"].rsplit("/", 1)[1] for s in manifest["shards"]}
    stale = [f"{SHARDS}/{n}" for n in out.listdir(SHARDS)
             if (n.startswith("part-") and n not in keep) or n.startswith(TMP_MARK)]
    stale += [f"{RECORDS}/{n}" for n in out.listdir(RECORDS) if n.startswith(TMP_MARK)]
    # a manifest write killed before its rename; only finalize writes one
    stale += [n for n in out.listdir(".") if n.startswith((f"{TMP_MARK}{MANIFEST}.", f"{TMP_MARK}{LEGACY_MANIFEST}."))]
    if not stale and not out.exists(LEGACY_MANIFEST):
        current = _current(out)
        if current is not None and _same(current, manifest):
            return current, False
    for rel in stale:
        out.remove(rel)
    out.write_json(MANIFEST, manifest)
    out.remove(LEGACY_MANIFEST)  # a dataset written before the rename: now upgraded to the new name
    return manifest, True


def _current(out: OutputDir) -> dict | None:
    """The manifest there now, or None (none, or unreadable)."""
    if not out.exists(MANIFEST):
        return None
    try:
        doc = out.read_json(MANIFEST)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _same(a: dict, b: dict) -> bool:
    """Equal in all but ``timing``, as JSON text (NaN statistics compare equal)."""
    def text(doc: dict) -> str:
        return json.dumps({k: v for k, v in doc.items() if k != "timing"}, sort_keys=True, allow_nan=True)

    return text(a) == text(b)


def _assemble(out: OutputDir) -> dict:
    """The manifest the plan and the unit records make (DatasetError listing units not finished)."""
    plan = Plan.require(out)
    if is_derived(plan.config):  # a dataset made by filter: its own manifest (lineage, the filter's cut flow)
        from .derive_manifest import assemble_derived

        return assemble_derived(out, plan)
    units = plan.units
    records = finished_records(out, units, "convert")
    flow = CutFlow()
    stats = {}
    shards, skipped_units = [], []
    per_input: dict[str, dict] = {i["path"]: {**copy.deepcopy(i), "status": "ok", "events_out": 0}
                                  for i in plan.inputs}
    for info in per_input.values():
        for entry in info.get("branches", {}).values():
            entry["rounded"] = 0
    for u in units:
        rec = records[u.key]
        if rec["status"] == "skipped":
            skipped_units.append({"path": u.input, "entry_start": u.entry_start, "entry_stop": u.entry_stop,
                                  "reason": rec["reason"]})
            per_input[u.input]["status"] = "partly skipped"
            continue
        shard = {**rec["shard"], "unit": {"index": u.index, "input": u.input, "entry_start": u.entry_start,
                                          "entry_stop": u.entry_stop}}
        if not out.exists(shard["path"]):
            raise DatasetError(f"unit {u.index} is recorded as done but its shard {shard['path']} is missing; "
                               f"delete {u.record} and re-run")
        shards.append(shard)
        unit_flow = CutFlow.from_dict(rec["cutflow"])
        flow = flow.add(unit_flow)
        stats = merge_tables(stats, table_from_json(rec["statistics"]))
        per_input[u.input]["events_out"] += shard["rows"]
        for name, n in unit_flow.values_rounded.items():
            entry = per_input[u.input].setdefault("branches", {}).setdefault(name, {})
            entry["rounded"] = entry.get("rounded", 0) + n
    skipped_inputs = plan.skipped_inputs
    entries_skipped = sum(s["entry_stop"] - s["entry_start"] for s in skipped_units) + sum(
        s.get("entries", 0) for s in skipped_inputs)
    entries_in = sum(i["entries"] for i in plan.inputs) + sum(s.get("entries", 0) for s in skipped_inputs)
    cutflow = flow.to_dict()
    rounded = cutflow.pop("values_rounded")
    events_cut = cutflow["events_no_muon"] + cutflow["events_invalid"]
    cutflow.update(entries_in=entries_in, events_cut=events_cut, entries_skipped=entries_skipped)
    if entries_in != cutflow["events_out"] + events_cut + entries_skipped:
        raise DatasetError(f"counts do not reconcile: entries in {entries_in} != events out "
                           f"{cutflow['events_out']} + cut {events_cut} + skipped {entries_skipped} "
                           "(this is a bug; please report it)")
    manifest = {
        **plan.manifest_head(),
        "inputs": list(per_input.values()),
        "skipped": {"inputs": skipped_inputs, "units": skipped_units},
        "units": len(units),
        "shards": shards,
        "totals": shard_totals(shards),
        "cutflow": cutflow,
        "reading": reading_summary(plan.config.get("layout", {}), rounded),
        "statistics": table_to_json(stats),
        "timing": timing_block(records, units),
    }
    return manifest


def reading_summary(layout: dict, rounded: dict[str, int]) -> dict:
    """The manifest's ``reading`` section: the precision policy, the fields filled with a constant
    (``fill:``) and, per field, how many values were stored correctly rounded. Each input's
    ``branches`` say which branch and input dtype every field came from (and its rounded count).
    A manifest written before this section existed has none: exact values, nothing filled."""
    return {"precision": layout.get("precision", "exact"), "filled": dict(layout.get("fill") or {}),
            "rounded": dict(rounded)}
