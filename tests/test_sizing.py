"""Issue 9, case 10: work units, row groups and read steps are sized by bytes from the events' actual
sizes, so memory follows --step-size when event sizes vary within a file, and a pile-up dump is cut
into several units. References: slow per-entry loops, and per-entry bytes summed from every raw branch
read with uproot (independent of the two count branches the code reads)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import uproot
from click.testing import CliRunner
from rawdump import random_events, write_dump

from pipeline.cli import main
from pipeline.config import ConvertConfig
from pipeline.format import Unit
from pipeline.schema import load_schema
from pipeline.sizing import greedy_edges, group_edges
from pipeline.source import open_tree
from pipeline.units import plan_units, unit_layout


def _greedy_reference(sizes, max_entries, max_bytes):
    """One entry at a time: close the group when the next entry would break a cap."""
    edges, n, total = [0], 0, 0.0
    for i, size in enumerate(sizes):
        if n and (n + 1 > max_entries or (max_bytes is not None and total + size > max_bytes)):
            edges.append(i)
            n, total = 0, 0.0
        n, total = n + 1, total + size
    edges.append(len(sizes))
    return edges


@pytest.mark.parametrize("seed", range(6))
def test_greedy_cuts_equal_a_per_entry_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 1000, rng.integers(1, 400)).astype(float)
    sizes[rng.random(len(sizes)) < 0.05] *= 50  # a few entries larger than the cap
    max_entries, max_bytes = int(rng.integers(1, 60)), float(rng.integers(500, 20000))
    got = greedy_edges(sizes, max_entries, max_bytes)
    assert got.tolist() == _greedy_reference(sizes, max_entries, max_bytes)
    assert greedy_edges(sizes, max_entries, None).tolist() == _greedy_reference(sizes, max_entries, None)
    # runs of whole groups: the same reference on the groups' sizes, mapped back to entry edges
    group_sizes = np.add.reduceat(sizes, got[:-1])
    runs = group_edges(got, sizes, None, 3 * max_bytes)
    assert runs.tolist() == [int(got[k]) for k in _greedy_reference(group_sizes, 10**9, 3 * max_bytes)]
    runs = group_edges(got, sizes, 2 * max_entries, None)
    group_n = np.diff(got)
    ref, n = [0], 0
    for k, m in enumerate(group_n):
        if n and n + m > 2 * max_entries:
            ref.append(int(got[k]))
            n = 0
        n += m
    ref.append(len(sizes))
    assert runs.tolist() == ref


def _raw_entry_bytes(path, schema) -> np.ndarray:
    """Per-entry bytes of every raw branch (count × schema itemsize), read directly with uproot."""
    import awkward as ak

    with uproot.open(path) as f:
        tree = f["MuonHitDump"]
        total = np.zeros(tree.num_entries)
        for fld in schema.fields:
            if not fld.source:
                continue
            arr = tree[fld.source].array()
            count = np.ones(len(arr)) if fld.level == "event" else np.asarray(ak.num(arr), dtype=float)
            total += count * np.dtype(fld.dtype).itemsize
    return total


def _uneven_hits(n: int, seed: int) -> np.ndarray:
    """10x uneven event sizes, big events clustered (the worst case for an averaged step)."""
    rng = np.random.default_rng(seed)
    hits = rng.integers(20, 40, n)
    hits[n // 3: n // 2] *= 10
    return hits


@pytest.fixture(scope="module")
def uneven_dump(tmp_path_factory):
    path = tmp_path_factory.mktemp("uneven") / "uneven.root"
    write_dump(path, random_events(600, seed=3, n_hits=_uneven_hits(600, 3)), basket_entries=50)
    return path


def test_row_groups_and_steps_are_bounded_by_bytes(uneven_dump):
    schema = load_schema(2)
    cfg = ConvertConfig(schema_version=2, row_group_size=100, row_group_bytes=60_000)
    ref = _raw_entry_bytes(uneven_dump, schema)
    f, tree = open_tree(str(uneven_dump), cfg.layout)
    with f:
        unit = Unit(0, str(uneven_dump), 0, 600, "k" * 64)
        groups, steps = unit_layout(tree, unit, cfg, schema, "150 kB")
    assert groups.tolist() == _greedy_reference(ref, 100, 60_000)
    sizes = np.add.reduceat(ref, groups[:-1])
    assert np.diff(groups).min() < np.diff(groups).max()  # the big events made smaller row groups
    assert set(steps.tolist()) <= set(groups.tolist())    # a step never splits a row group
    step_bytes = np.add.reduceat(ref, steps[:-1])
    groups_per_step = np.diff(np.searchsorted(groups, steps))
    assert np.all((step_bytes <= 150_000) | (groups_per_step == 1))
    assert sizes.max() <= 60_000 or np.diff(groups)[sizes.argmax()] == 1


def test_units_follow_the_bytes_in_the_baskets(uneven_dump):
    """Work units are planned from basket metadata: where events are 10x larger, units hold ~10x fewer."""
    schema = load_schema(2)
    ref = _raw_entry_bytes(uneven_dump, schema)
    cfg = ConvertConfig(schema_version=2, shard_bytes=int(ref.sum() / 15), shard_events=10**6)
    _, _, units = plan_units([str(uneven_dump)], cfg, skip_bad=False)
    edges = [units[0].entry_start] + [u.entry_stop for u in units]
    assert edges[0] == 0 and edges[-1] == 600 and len(units) >= 5
    unit_bytes = np.add.reduceat(ref, edges[:-1])
    # within a basket bytes are spread evenly, so a unit may miss its budget by the unevenness inside one
    assert unit_bytes[:-1].max() <= 1.3 * cfg.shard_bytes and unit_bytes[:-1].min() >= 0.7 * cfg.shard_bytes
    big = [u for u in units if u.entry_start >= 200 and u.entry_stop <= 300]
    small = [u for u in units if u.entry_stop <= 200]
    assert big and small and max(u.entry_stop - u.entry_start for u in big) < min(
        u.entry_stop - u.entry_start for u in small)


def _shard_hashes(ds) -> list[str]:
    m = json.loads((ds / "_manifest.json").read_text())
    return [hashlib.sha256((ds / s["path"]).read_bytes()).hexdigest() for s in m["shards"]]


def test_output_does_not_depend_on_step_size_or_workers(tmp_path, uneven_dump):
    """Row groups come from the data, so the step (1 row group or all of them) and -j change nothing."""
    common = ["--row-group-size", "100", "--row-group-bytes", "60 kB", "--shard-bytes", "400 kB", "-q"]
    runs = {"small-step": ["--step-size", "1 kB", "-j", "1"], "big-step": ["--step-size", "1 GB", "-j", "1"],
            "entries-step": ["--step-size", "7", "-j", "2"]}
    hashes = {}
    for name, extra in runs.items():
        ds = tmp_path / name
        r = CliRunner().invoke(main, ["convert", str(uneven_dump), "-o", str(ds), *common, *extra])
        assert r.exit_code == 0, r.output
        hashes[name] = _shard_hashes(ds)
    assert len(hashes["small-step"]) > 1
    assert hashes["small-step"] == hashes["big-step"] == hashes["entries-step"]
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "small-step")])  # units of unequal lengths
    assert r.exit_code == 0, r.output


def test_byte_caps_are_options_with_a_clear_error(tmp_path, uneven_dump):
    r = CliRunner().invoke(main, ["convert", str(uneven_dump), "-o", str(tmp_path / "x"), "--row-group-bytes", "lots"])
    assert r.exit_code == 2 and "--row-group-bytes 'lots'" in r.output
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(main, ["convert", str(uneven_dump), "-o", str(tmp_path / "y"), "-q",
                                  "--row-group-bytes", "none", "--shard-bytes", "none", "--row-group-size", "600"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "y" / "_manifest.json").read_text())
    assert len(m["shards"]) == 1 and m["config"]["row_group_bytes"] is None


def test_rntuple_units_follow_the_bytes_too(tmp_path):
    """An RNTuple has no basket metadata: --shard-bytes was ignored (one unit). Its units are now cut from
    the exact per-entry sizes, read in pieces: the greedy per-entry reference on uproot's own counts."""
    from rawdump import flat_branches, write_rntuple

    import pipeline.sizing as sizing

    path = tmp_path / "r.root"
    write_rntuple(path, flat_branches(random_events(600, seed=3, n_hits=_uneven_hits(600, 3))))
    schema = load_schema(2)
    with uproot.open(path) as f:
        import awkward as ak

        tree = f["MuonHitDump"]
        per = {lvl: sum(np.dtype(x.dtype).itemsize for x in schema.fields if x.source and x.level == lvl)
               for lvl in ("event", "hit", "muon")}
        ref = (per["event"] + per["hit"] * np.asarray(ak.num(tree["spacePoint_time"].array()), dtype=float)
               + per["muon"] * np.asarray(ak.num(tree["truthMuon_pt"].array()), dtype=float))
    budget = int(ref.sum() / 7)
    cfg = ConvertConfig(schema_version=2, shard_bytes=budget, shard_events=10**6)
    old_piece, sizing.COUNT_PIECE = sizing.COUNT_PIECE, 128  # several pieces
    try:
        _, _, units = plan_units([str(path)], cfg, skip_bad=False)
    finally:
        sizing.COUNT_PIECE = old_piece
    edges = [units[0].entry_start] + [u.entry_stop for u in units]
    assert edges == _greedy_reference(ref, 10**9, budget) and len(units) >= 7
