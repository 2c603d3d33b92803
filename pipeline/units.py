"""Work units of a conversion: deterministic (file × entry range) pieces, and running one.

``plan_units`` turns the inputs into an ordered list of :class:`~pipeline.format.Unit`; ``run_unit``
is a pure function of (unit, configuration, output directory) that writes one shard and one record,
both atomically; the run settings only change how (step size, skip-bad). Any executor (in-process,
process pool, Dask, a job array task) calls the same ``run_unit``, so the dataset is identical
whatever ran it. A unit's *key* (:func:`~pipeline.format.unit_key`) covers the input identity (UUID,
size), the entry range, the configuration and the tool version: a finished unit with the same key is
never redone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ._version import __version__
from .config import ConvertConfig
from .errors import InputError
from .format import InputInfo, Unit, dataset_id, identity_metadata, unit_key
from .remote import read_error_text
from .schema import load_schema
from .settings import RunSettings
from .sizes import step_bytes
from .sizing import entry_bytes, greedy_edges, group_edges, item_bytes, level_branches, plan_unit_edges
from .source import inspect_input, open_tree, read_arrays, read_chunk
from .stats import StatsTable, merge_tables, table_to_json
from .storage import OutputDir
from .transform import chunk_stats, process_chunk, to_arrow

#: ``progress(entries, hits)``: called as entries of the input are done.
OnProgress = Callable[[int, int], None]

def plan_units(inputs: list[str], cfg: ConvertConfig, skip_bad: bool,
               on_input=None) -> tuple[list[InputInfo], list[dict], list[Unit]]:
    """Open every input once (identity, entries, branch checks) and cut it into units.

    Units hold at most ``cfg.shard_events`` entries and about ``cfg.shard_bytes`` bytes, estimated
    from the TTree's basket metadata (nothing is decompressed; see :mod:`pipeline.sizing`).
    Returns (good inputs, skipped inputs with reasons, units). A bad input raises unless
    ``skip_bad``; then it is listed with its reason and the entries it held, when known.

    Every input is checked here, before the plan is written, for what no single unit can see: its
    eventNumbers are unique (:func:`check_event_numbers`; a duplicate may span two units). Every executor
    runs units from a plan made here (a job-array task reuses the plan the first task made), so the
    check covers them all.
    """
    schema = load_schema(cfg.schema_version)
    good, skipped, units = [], [], []
    chash = cfg.hash()
    branches = cfg.layout.read_branches(schema)

    per_item, counted = item_bytes(schema), level_branches(schema, cfg.layout)
    event_branch = cfg.layout.branch(schema.field("eventNumber").source)
    for path in inputs:
        def cut(tree, path=path):
            check_event_numbers(tree, path, event_branch)
            return plan_unit_edges(tree, branches, cfg.shard_events, cfg.shard_bytes,
                                   exact_sizes=lambda lo, hi: entry_bytes(tree, path, counted, per_item, lo, hi))

        try:
            info, edges = inspect_input(path, cfg.layout, schema, cut)
        except InputError as err:
            if not skip_bad:
                raise
            skipped.append({"path": path, "reason": err.reason, "field": err.field,
                            "entries": getattr(err, "entries", 0)})
            if on_input:
                on_input(path, None)
            continue
        good.append(info)
        for start, stop in zip(edges[:-1].tolist(), edges[1:].tolist()):
            units.append(Unit(len(units), path, start, stop, unit_key(info, start, stop, chash), info.uuid))
        if on_input:
            on_input(path, info)
    return good, skipped, units


def check_event_numbers(tree, path: str, branch: str) -> None:
    """Raise an InputError (file, first repeated entry, field eventNumber) when a value of the eventNumber
    ``branch`` repeats within the input: a duplicated event, or a damaged basket that still decompresses.

    ``validate`` refuses such a dataset ("eventNumber unique per input"; the train/validation split hashes
    it), so convert refuses it before anything is written, whichever entries the selection keeps. The
    whole branch is read once (8 bytes per entry); numbers in increasing order (most dumps) need no sort.
    ``bench/bench_event_numbers.py`` (2-core CPU): 0.03 s per million entries increasing, 0.07 s in random order.
    """
    n = int(tree.num_entries)
    try:
        values = np.asarray(read_arrays(tree, [branch], 0, n)[branch])
    except Exception as err:  # a damaged basket of the branch: the same words as a unit's read error
        raise InputError(f"cannot read entries 0-{n} of branch {branch!r} ({read_error_text(err)})", file=path,
                         field="eventNumber") from err
    if len(values) < 2 or bool(np.all(values[1:] > values[:-1])):
        return  # increasing, as most dumps are: unique without a sort
    ordered = np.sort(values)
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if not len(repeated):
        return
    value = ordered[repeated[0]]
    entries = np.flatnonzero(values == value)
    shown = ", ".join(str(e) for e in entries[:3].tolist()) + (", ..." if len(entries) > 3 else "")
    kinds = len(np.unique(ordered[repeated]))
    raise InputError(f"eventNumber {value} occurs {len(entries)} times (entries {shown}); {kinds} value(s) repeat "
                     "in this input: a duplicated event or a damaged basket (validate would refuse the dataset)",
                     file=path, entry=int(entries[1]), field="eventNumber")


def _row_groups(chunk, group_edges: np.ndarray) -> list[tuple[int, int]]:
    """Event ranges of the chunk that form row groups: row group k holds the selected events of
    input entries [group_edges[k], group_edges[k+1]). The edges come from the data and the
    configuration only, and reads are aligned to them, so the row groups (and the statistics taken
    per row group) do not depend on the step size, the workers or a resume."""
    group = np.searchsorted(group_edges, chunk.event["source_entry"], side="right")
    cuts = np.flatnonzero(np.diff(group)) + 1
    edges = [0, *cuts.tolist(), chunk.n_events]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def unit_layout(tree, unit: Unit, cfg: ConvertConfig, schema, step_size: int | str) -> tuple[np.ndarray, np.ndarray]:
    """(row-group edges, read-step edges) of a unit, as absolute entry numbers.

    Row groups: at most ``cfg.row_group_size`` entries and ``cfg.row_group_bytes`` bytes, from the
    exact hit/muon counts of the unit's entries. Steps: runs of whole row groups of at most
    ``step_size`` entries (int) or bytes ('N B'), at least one row group each.
    """
    sizes = entry_bytes(tree, unit.input, level_branches(schema, cfg.layout), item_bytes(schema),
                        unit.entry_start, unit.entry_stop)
    rel = greedy_edges(sizes, cfg.row_group_size, cfg.row_group_bytes)
    if isinstance(step_size, int):
        steps = group_edges(rel, sizes, step_size, None)
    else:
        steps = group_edges(rel, sizes, None, step_bytes(step_size))
    return rel + unit.entry_start, steps + unit.entry_start


def run_unit(unit: Unit, cfg: ConvertConfig, out_url: str, settings: RunSettings,
             progress: OnProgress | None = None) -> dict:
    """Convert one unit: read in steps of ``settings.step_size``, transform, write the shard, then the record.

    Returns the record (also written to ``_work/units/KEY.json``). With ``settings.skip_bad`` an input
    error is recorded as a skipped unit instead of raised; nothing partial stays visible. Remote reads
    use the remote timeout of the calling context (the executors set ``settings.remote_timeout``).
    """
    import pyarrow.parquet as pq

    step_size, skip_bad = settings.step_size, settings.skip_bad
    out = OutputDir(out_url)
    schema = load_schema(cfg.schema_version)
    arrow_schema = schema.arrow_schema()
    # the shard names its dataset and unit in its own metadata: validate catches a shard of another
    # dataset or unit even when the manifest's checksum was recomputed to match it
    arrow_schema = arrow_schema.with_metadata({**arrow_schema.metadata, **identity_metadata(
        dataset_id(cfg.hash(), __version__), unit.to_dict())})
    t0 = time.perf_counter()
    flow = None
    stats: StatsTable = {}
    rows = hits = muons = 0
    try:
        f, tree = open_tree(settings.locate(unit.input), cfg.layout)  # as typed, or from the client's folder
        try:
            if unit.uuid and str(f.file.uuid) != unit.uuid:
                raise InputError(f"file changed since the plan was made (ROOT UUID {f.file.uuid}, planned "
                                 f"{unit.uuid}); re-run without --task-index to re-plan", file=unit.input)
            groups, steps = unit_layout(tree, unit, cfg, schema, step_size)
            budget = None if isinstance(step_size, int) else step_bytes(step_size)  # baskets read at once
            with out.atomic(unit.shard, native=True) as fh, pq.ParquetWriter(
                    fh, arrow_schema, use_dictionary=["source_file"], write_statistics=False,
                    **cfg.compression.writer_kwargs()) as writer:
                for start, stop in zip(steps[:-1].tolist(), steps[1:].tolist()):
                    chunk = read_chunk(tree, unit.input, cfg.layout, schema, start, stop, budget)
                    chunk, chunk_flow = process_chunk(chunk, schema, cfg.transform)
                    flow = chunk_flow if flow is None else flow.add(chunk_flow)
                    rows, hits, muons = rows + chunk.n_events, hits + chunk.n_hits, muons + chunk.n_muons
                    table = to_arrow(chunk, schema)
                    for lo, hi in _row_groups(chunk, groups):
                        writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
                        stats = merge_tables(stats, chunk_stats(chunk, schema, lo, hi))
                    if progress is not None:
                        progress(stop - start, chunk.n_hits)
                if rows == 0:
                    # No event passed: one empty row group, so that every reader opens the shard
                    # (a Parquet file without row groups makes ak.from_parquet raise IndexError).
                    writer.write_table(arrow_schema.empty_table())
        finally:
            f.close()
    except InputError as err:
        if not skip_bad:
            raise
        out.remove(unit.shard)
        record = {"unit": unit.to_dict(), "status": "skipped", "reason": str(err),
                  "entries": unit.entry_stop - unit.entry_start, "tool_version": __version__}
        out.write_json(unit.record, record)
        return record
    shard = {"path": unit.shard, "rows": rows, "hits": hits, "muons": muons,
             "bytes": out.size(unit.shard), "sha256": out.sha256(unit.shard)}
    record = {
        "unit": unit.to_dict(), "status": "done", "entries": unit.entry_stop - unit.entry_start,
        "shard": shard, "cutflow": flow.to_dict() if flow else {}, "statistics": table_to_json(stats),
        "tool_version": __version__, "timing": {"seconds": time.perf_counter() - t0},
    }
    out.write_json(unit.record, record)
    return record
