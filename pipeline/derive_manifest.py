"""The manifest of a derived dataset (``filter``), assembled by ``finalize`` from the plan and the unit records.

Beside the keys of every manifest (the same meaning, so readers take it unchanged) it holds:

* ``lineage``: ``{parent: {path, dataset_id, manifest_sha256}, scores: {path, scores_id, manifest_sha256,
  checkpoint_sha256}, threshold, working_point, caps: {max_muons_per_event, max_hits_per_event}}``;
* ``filter_cutflow``: the filter's own counters (:class:`~pipeline.derive_flow.FilterFlow`), which
  reconcile (events, muons and hits in = out + cut, each cut named) before anything is written;
* ``cutflow``: the same step in the keys ``convert`` writes (entries in = the parent's events), plus
  ``events_capped`` and ``muons_capped``;
* per shard, ``parent_shard`` (path and sha256 of the shard it was filtered from);
* ``skipped`` and ``reading`` as the parent's (the units it skipped, how it read its raw inputs).

The parent must be as planned (its manifest's sha256) when finalize runs. This module imports nothing
that imports :mod:`pipeline.manifest`, whose ``finalize`` hands a derived plan to :func:`assemble_derived`.
"""

from __future__ import annotations

import copy

from .derive_config import FilterConfig
from .derive_flow import FilterFlow
from .errors import DatasetError
from .plan import Plan, finished_records, shard_totals, timing_block
from .scores import parent_ref
from .stats import merge_tables, table_from_json, table_to_json
from .storage import OutputDir


def lineage_of(cfg: FilterConfig) -> dict:
    """The manifest's ``lineage`` section of a filter configuration."""
    return {"parent": {"path": cfg.parent_path, "dataset_id": cfg.parent_dataset_id,
                       "manifest_sha256": cfg.parent_manifest_sha256},
            "scores": {"path": cfg.scores_path, "scores_id": cfg.scores_id, "manifest_sha256": cfg.scores_id,
                       "checkpoint_sha256": cfg.checkpoint_sha256},
            "threshold": cfg.threshold, "working_point": cfg.working_point,
            "caps": {"max_muons_per_event": cfg.caps.max_muons_per_event,
                     "max_hits_per_event": cfg.caps.max_hits_per_event}}


def assemble_derived(out: OutputDir, plan: Plan) -> dict:
    """The manifest of a derived dataset from its plan and unit records (written, with the clean-up of
    stale shards and temporaries, by :func:`pipeline.manifest.finalize_status`, as for ``convert``).

    DatasetError when units are missing (listed), the parent changed since the plan, or the counts do
    not reconcile."""
    cfg = FilterConfig.from_dict(plan.config)
    units = plan.units
    records = finished_records(out, units, "filter", statuses=("done",))
    ref, parent = parent_ref(cfg.parent_path)
    if (ref.dataset_id, ref.manifest_sha256) != (cfg.parent_dataset_id, cfg.parent_manifest_sha256):
        raise DatasetError(f"the parent dataset {cfg.parent_path} has changed since {out.url} was planned (manifest "
                           f"sha256 {cfg.parent_manifest_sha256[:16]}… -> {ref.manifest_sha256[:16]}…): re-run filter "
                           "with --reconfigure")
    flow, stats, shards = FilterFlow(), {}, []
    events_out = {i["path"]: 0 for i in plan.inputs}
    for u in units:
        rec = records[u.key]
        shard = {**rec["shard"], "unit": {"index": u.index, "input": u.input, "entry_start": u.entry_start,
                                          "entry_stop": u.entry_stop}, "parent_shard": rec["parent_shard"]}
        if not out.exists(shard["path"]):
            raise DatasetError(f"unit {u.index} is recorded as done but its shard {shard['path']} is missing; "
                               f"delete {u.record} and re-run")
        shards.append(shard)
        flow = flow.add(FilterFlow.from_dict(rec["cutflow"]))
        stats = merge_tables(stats, table_from_json(rec["statistics"]))
        events_out[u.input] += shard["rows"]
    problems = flow.problems()
    if problems:
        raise DatasetError(f"counts do not reconcile: {problems[0]} (this is a bug; please report it)")
    status = {i["path"]: i.get("status", "ok") for i in parent["inputs"]}
    inputs = [{**copy.deepcopy(i), "status": status.get(i["path"], "ok"), "events_out": events_out[i["path"]]}
              for i in plan.inputs]
    manifest = {
        **plan.manifest_head(),
        "lineage": lineage_of(cfg),
        "inputs": inputs,
        "skipped": copy.deepcopy(parent.get("skipped", {"inputs": [], "units": []})),
        "units": len(units),
        "shards": shards,
        "totals": shard_totals(shards),
        "cutflow": flow.convert_keys(),
        "filter_cutflow": flow.to_dict(),
        "reading": copy.deepcopy(parent.get("reading", {})),
        "statistics": table_to_json(stats),
        "timing": timing_block(records, units),
    }
    return manifest
