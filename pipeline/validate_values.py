"""The **values** level of ``validate``: every value of every shard, decoded once, checked against the
schema, the manifest's configuration and the manifest's statistics.

Per row group (:func:`check_row_group`): finite values, schema ranges and allowed sets (``pipeline.rules``,
the rules convert applies before writing); truth links in [-1, n_muons); the configuration's cuts hold for
every muon (pT ≥ min_pt GeV, |η| ≤ max_abs_eta, ≥ min_hits hits of the kept technologies) and no event is
without a muon unless kept on purpose; derived fields equal their formulas bit for bit (r, s, θ, φ, η from
the Low edge; q/pT = q/pT); every event's ``source_file`` is its unit's input, and ``source_entry`` rises
strictly inside the unit's entry range.

Across shards: eventNumber is unique per input (:func:`check_event_numbers`), and the manifest statistics
equal those recomputed from the shards, bit for bit (:func:`check_statistics`).

Each breach is one :class:`~pipeline.report.Problem` naming the shard, the column and the first rows
(0-based, inside the shard), passed to ``add``; nothing is raised.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .features import DERIVED, hit_features, truth_qpt
from .report import Problem
from .rules import field_violations
from .selection import SelectionConfig
from .stats import StatsTable
from .transform import LOW_EDGE


def _rows(mask: np.ndarray, row_of: np.ndarray | None, first_row: int) -> np.ndarray:
    """Rows (events, counted inside the shard) where ``mask`` is set, ascending, each once. ``mask`` is per
    hit or per muon when ``row_of`` gives each one's event in the row group, else per event."""
    idx = np.flatnonzero(mask)
    return np.unique(row_of[idx] if row_of is not None else idx) + first_row


@dataclass
class ShardContext:
    """What the values of one shard must agree with, and what the checks across shards need from it."""

    rel: str
    unit: dict  # the manifest's unit (input, entry_start, entry_stop)
    selection: dict | None  # the manifest's configured selection (None: config unusable)
    last_entry: int = -1  # source_entry of the previous row, across row groups
    events: list[np.ndarray] = field(default_factory=list)  # eventNumber per row group
    first_rows: list[int] = field(default_factory=list)


def check_row_group(chunk, table, schema, ctx: ShardContext, first_row: int, add) -> None:
    """Check the values of one row group: ``chunk`` is its ``EventChunk``, ``table`` its Arrow table, and
    ``first_row`` the shard row it starts at. Each breach is passed to ``add``."""
    shard = ctx.rel
    hit_row = chunk.hit_event_index()
    muon_row = chunk.muon_event_index()
    for level, values, row_of in (("hit", chunk.hits, hit_row), ("muon", chunk.muons, muon_row)):
        column = schema.columns[level]
        for f in schema.level(level):
            # the same rules convert and migrate apply before writing (pipeline.rules)
            for kind, bad, why in field_violations(values[f.name], f):
                add(Problem.with_rows(kind, f"{int(bad.sum())} value(s) breaking the rule, e.g. {why}", shard,
                                      (column, f.name), _rows(bad, row_of, first_row)))
    link = chunk.hits["spacePoint_truthLink"]
    n_mu = np.diff(chunk.muon_offsets)[hit_row]
    bad = (link < -1) | (link >= n_mu)
    if bad.any():
        add(Problem.with_rows("truth-link", f"{int(bad.sum())} link(s) outside [-1, n_muons)", shard,
                              (schema.hit_column, "spacePoint_truthLink"), _rows(bad, hit_row, first_row)))
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
            add(Problem.with_rows("formula", f"{int(bad.sum())} value(s) differ from {schema.field(name).formula}",
                                  shard, (schema.hit_column, name), _rows(bad, hit_row, first_row)))
    if schema.has("truthMuon_qpt"):
        qpt = chunk.muons["truthMuon_qpt"]
        expect_qpt = truth_qpt(chunk.muons["truthMuon_q"], chunk.muons["truthMuon_pt"])
        bad = ~((expect_qpt == qpt) | (np.isnan(expect_qpt) & np.isnan(qpt)))
        if bad.any():
            add(Problem.with_rows("formula", f"{int(bad.sum())} value(s) differ from "
                                  f"{schema.field('truthMuon_qpt').formula}", shard,
                                  (schema.muon_column, "truthMuon_qpt"), _rows(bad, muon_row, first_row)))
    _check_provenance(chunk, table, ctx, first_row, add)


def _check_cuts(chunk, nhits: np.ndarray, sel: dict, schema, first_row: int, shard: str, add) -> None:
    """The selection the manifest's configuration records holds for every stored muon and hit (the same
    comparisons, in the same dtypes, as ``selection.apply_selection``). ``nhits``: the hits linked to each
    muon of the row group."""
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
            add(Problem.with_rows("cuts" if name else "min-hits",
                                  f"{int(bad.sum())} muon(s) with {why} (config.selection)", shard,
                                  (schema.muon_column, name) if name else (schema.muon_column,),
                                  _rows(bad, muon_row, first_row)))
    allowed = SelectionConfig.from_dict(sel).codes()  # None: every technology code is kept
    bad = (~np.isin(chunk.hits["spacePoint_technology"], allowed) if allowed is not None
           else np.zeros(len(chunk.hits["spacePoint_technology"]), dtype=bool))
    if bad.any():
        add(Problem.with_rows("cuts", f"{int(bad.sum())} hit(s) of technologies not in "
                              f"config.selection.technologies {list(sel['technologies'])}", shard,
                              (schema.hit_column, "spacePoint_technology"), _rows(bad, hit_row, first_row)))
    if not sel.get("keep_empty_events", False):
        bad = np.diff(chunk.muon_offsets) == 0
        if bad.any():
            add(Problem.with_rows("cuts", f"{int(bad.sum())} event(s) without a muon, but "
                                  "config.selection.keep_empty_events is false", shard, (schema.muon_column,),
                                  _rows(bad, None, first_row)))


def _check_provenance(chunk, table, ctx: ShardContext, first_row: int, add) -> None:
    """source_file is the unit's input; source_entry strictly increasing inside the unit's range (and
    across row groups: ``ctx.last_entry``). Keeps the row group's eventNumbers for
    :func:`check_event_numbers`."""
    import pyarrow.compute as pc

    shard, unit = ctx.rel, ctx.unit
    if chunk.n_events == 0:
        return
    files = table.column("source_file")
    bad = np.asarray(pc.not_equal(files, unit["input"]).to_numpy(zero_copy_only=False), dtype=bool)
    if bad.any():
        add(Problem.with_rows("provenance", f"{int(bad.sum())} event(s) from another file than the unit's input "
                              f"{unit['input']}, e.g. {files[int(np.flatnonzero(bad)[0])].as_py()!r}", shard,
                              ("source_file",), _rows(bad, None, first_row)))
    entry = chunk.event["source_entry"]
    bad = (entry < unit["entry_start"]) | (entry >= unit["entry_stop"])
    if bad.any():
        add(Problem.with_rows("provenance", f"{int(bad.sum())} source_entry value(s) outside the unit's entries "
                              f"[{unit['entry_start']}, {unit['entry_stop']})", shard, ("source_entry",),
                              _rows(bad, None, first_row)))
    previous = np.concatenate([[ctx.last_entry], entry[:-1]])
    bad = entry <= previous
    if bad.any():
        add(Problem.with_rows("order", f"{int(bad.sum())} event(s) not in increasing source_entry order (a "
                              "duplicated, moved or shuffled row)", shard, ("source_entry",),
                              _rows(bad, None, first_row)))
    ctx.last_entry = int(entry[-1])
    ctx.events.append(chunk.event["eventNumber"])
    ctx.first_rows.append(first_row)


def check_statistics(manifest: dict, stats: StatsTable, add) -> None:
    """Manifest statistics equal those recomputed from the shards (per row group, merged in order, as
    convert computes them: bit for bit). ``stats``: the recomputed ``stats.StatsTable``."""
    recorded = manifest.get("statistics")
    if not isinstance(recorded, dict):
        add(Problem("statistics", "the manifest has no statistics (the trainer normalises with them)",
                    where=("statistics",)))
        return
    for col in sorted(set(recorded) | set(stats)):
        rec, got = recorded.get(col, {}), stats.get(col, {})
        if not isinstance(rec, dict):
            add(Problem("statistics", "not an object", where=("statistics", col)))
            continue
        for name in list(got) + [n for n in rec if n not in got]:
            key = ("statistics", col, name)
            if name not in got:
                add(Problem("statistics", "recorded for a field the shards do not hold", where=key))
                continue
            want = got[name].to_dict()
            have = rec.get(name)
            if not isinstance(have, dict):
                add(Problem("statistics", "missing from the manifest", where=key))
                continue
            wrong = []
            for k, v in want.items():
                h = have.get(k)
                same = isinstance(h, int | float) and (h == v or (np.isnan(h) and np.isnan(v)))
                if not same:
                    wrong.append(f"{k} {h!r} (recomputed {v!r})")
            if wrong:
                add(Problem("statistics", "differs from the shards: " + ", ".join(wrong[:3]), where=key))


def check_event_numbers(per_input: dict[str, list[tuple[str, ShardContext]]], add) -> None:
    """eventNumber unique within each input file (the split hashes it; a duplicate is a duplicated event).

    ``per_input``: per input path, the ``(shard, context)`` of each shard whose values were checked."""
    for path, shards in per_input.items():
        parts: list[np.ndarray] = []
        located: list[tuple[str, int, int]] = []  # (shard, first row, events) of each part
        for rel, ctx in shards:
            for ev, first in zip(ctx.events, ctx.first_rows, strict=True):
                parts.append(ev)
                located.append((rel, first, len(ev)))
        if not parts:
            continue
        ev = np.concatenate(parts)
        order = np.argsort(ev, kind="stable")
        dup = np.flatnonzero(ev[order][1:] == ev[order][:-1]) + 1
        if not len(dup):
            continue
        # locate: the shard and row of each repeated occurrence
        bounds = np.cumsum([0] + [n for _, _, n in located])
        by_shard: dict[str, list[int]] = defaultdict(list)
        for pos in order[dup]:
            k = int(np.searchsorted(bounds, pos, side="right")) - 1
            rel, first, _ = located[k]
            by_shard[rel].append(first + int(pos - bounds[k]))
        values = np.unique(ev[order[dup]])
        for rel, rows in by_shard.items():
            add(Problem.with_rows("duplicate", f"{len(values)} eventNumber value(s) occur more than once in input "
                                  f"{path}, e.g. {int(values[0])}", rel, ("eventNumber",), sorted(rows)))
