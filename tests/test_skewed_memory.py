"""Memory bounded in bytes for any skew of event sizes.

A dump whose last events carry 1,000 × more hits than the rest, written (as producers do) in baskets
of a fixed entry count, puts those hits in one basket per branch; uproot decompresses whole baskets
and held those of every branch of a step at once, so a step of a few MB inside that basket cost all
of them (peak RSS 4 × the same hits spread evenly). The test makes its own skewed and even dumps.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from rawdump import random_events, write_dump

from pipeline import convert
from pipeline.config import ConvertConfig
from pipeline.schema import load_schema
from pipeline.sizing import entry_bytes, item_bytes, level_branches
from pipeline.source import open_tree
from pipeline.units import plan_units, unit_layout

N, HEAVY, HEAVY_HITS, BASKET = 2000, 20, 50_000, 20
STEP, STEP_TEXT = 4 * 10**6, "4 MB"
REPO = Path(__file__).resolve().parents[1]


def hits_per_entry(skewed: bool) -> np.ndarray:
    hits = np.full(N, 10)
    hits[-HEAVY:] = HEAVY_HITS
    return hits if skewed else np.full(N, int(hits.sum() // N))


@pytest.fixture(scope="module")
def skewed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("skew") / "skewed.root"
    write_dump(path, random_events(N, seed=7, n_hits=hits_per_entry(True)), basket_entries=BASKET)
    return path


def reference_span(tree, branches: list[str], start: int, stop: int) -> int:
    """Bytes of the values uproot decompresses to read [start, stop) of ``branches`` together, the slow way:
    the file was written in baskets of BASKET entries, so each overlapping basket costs its items x itemsize."""
    total = 0
    for b in branches:
        arr = tree[b].array(library="ak")
        counts = np.asarray(ak.num(arr, axis=1)) if arr.ndim > 1 else np.ones(len(arr), np.int64)
        itemsize = np.asarray(ak.flatten(arr) if arr.ndim > 1 else arr).dtype.itemsize
        for lo in range(0, N, BASKET):
            if lo < stop and start < lo + BASKET:
                total += int(counts[lo:lo + BASKET].sum()) * itemsize
    return total


def test_no_read_holds_more_baskets_than_the_step(skewed, tmp_path, monkeypatch):
    """Every uproot read of a conversion at --step-size '4 MB' holds at most 4 MB of baskets (or one branch);
    the shards are the same bytes as with an entry-count step (one read of all branches per step)."""
    from uproot.behaviors.TBranch import HasBranches

    calls: list[tuple[list[str], int, int]] = []
    real = HasBranches.arrays

    def arrays(self, expressions=None, *args, entry_start=None, entry_stop=None, **kwargs):
        calls.append((list(expressions or []), entry_start, entry_stop))
        return real(self, expressions, *args, entry_start=entry_start, entry_stop=entry_stop, **kwargs)

    monkeypatch.setattr(HasBranches, "arrays", arrays)
    cfg = dict(schema_version=2, row_group_bytes=STEP, shard_events=N)
    convert([str(skewed)], str(tmp_path / "bytes"), ConvertConfig(**cfg), workers=1, quiet=True, step_size=STEP_TEXT)
    monkeypatch.undo()
    reads = [c for c in calls if len(c[0]) > 1]  # the step reads (sizing reads one branch)
    assert reads
    with uproot.open(skewed) as f:
        tree = f["MuonHitDump"]
        spans = [(reference_span(tree, b, lo, hi), len(b)) for b, lo, hi in reads]
    over = [s for s in spans if s[0] > STEP and s[1] > 1]
    assert not over, f"{len(over)} reads hold more than {STEP} bytes of baskets: {over[:3]}"
    assert max(s for s, _ in spans) > 0

    convert([str(skewed)], str(tmp_path / "entries"), ConvertConfig(**cfg), workers=1, quiet=True, step_size=10**6)

    def shards(d: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((d / "shards").iterdir())}

    assert shards(tmp_path / "bytes") == shards(tmp_path / "entries")


def test_steps_and_row_groups_respect_their_byte_caps_on_a_skewed_input(skewed):
    """Row groups hold at most --row-group-bytes (or one entry), steps at most max(step, one row group):
    checked against a per-entry byte count made the slow way (every entry's items x their dtype sizes)."""
    cfg = ConvertConfig(schema_version=2, row_group_bytes=STEP // 2, row_group_size=100)
    schema = load_schema(2)
    _, _, units = plan_units([str(skewed)], cfg, skip_bad=False)
    per = item_bytes(schema)
    hits = hits_per_entry(True)
    with uproot.open(skewed) as f:
        muons = np.asarray(ak.num(f["MuonHitDump"]["truthMuon_pt"].array(library="ak"), axis=1))
    slow = np.array([per["event"] + hits[i] * per["hit"] + muons[i] * per["muon"] for i in range(N)], float)
    for unit in units:
        f, tree = open_tree(unit.input, cfg.layout)
        try:
            groups, steps = unit_layout(tree, unit, cfg, schema, f"{STEP} B")
            fast = entry_bytes(tree, unit.input, level_branches(schema, cfg.layout), per, unit.entry_start,
                               unit.entry_stop)
        finally:
            f.close()
        np.testing.assert_array_equal(fast, slow[unit.entry_start:unit.entry_stop])
        biggest_group = 0.0
        for lo, hi in zip(groups[:-1], groups[1:]):
            size = slow[lo:hi].sum()
            assert hi - lo <= 100 and (size <= STEP // 2 or hi - lo == 1), (lo, hi, size)
            biggest_group = max(biggest_group, size)
        assert set(steps.tolist()) <= set(groups.tolist())  # a step never splits a row group
        for lo, hi in zip(steps[:-1], steps[1:]):
            assert slow[lo:hi].sum() <= max(STEP, biggest_group), (lo, hi)


WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


@pytest.mark.slow  # four conversions in fresh processes (~15 s)
def test_peak_memory_of_a_skewed_input_is_that_of_the_same_hits_spread_evenly(skewed, tmp_path):
    even = tmp_path / "even.root"
    write_dump(even, random_events(N, seed=7, n_hits=hits_per_entry(False)), basket_entries=BASKET)
    code = "import sys; from pipeline.cli import main; sys.argv[0] = 'muon-pipeline'; main()"
    peaks = {}
    for name, path in (("skewed", skewed), ("even", even)):
        runs = []
        for k in range(2):
            cmd = [sys.executable, "-c", WRAP, sys.executable, "-c", code, "convert", str(path), "-o",
                   str(tmp_path / f"{name}{k}"), "-q", "-j", "1", "--step-size", STEP_TEXT, "--row-group-bytes",
                   STEP_TEXT]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            assert out.returncode == 0, out.stderr
            runs.append(int(out.stdout.split()[-1]) / 1024)
        peaks[name] = min(runs)
    assert peaks["skewed"] <= 1.5 * peaks["even"], peaks
