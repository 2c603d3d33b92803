"""The simulator's output contract: ROOT layout and dtypes, determinism, multi-file runs, CLI errors.

Each test checks against an independent reference: the branch list and dtypes of
``shared/reference/raw-format.md`` (re-typed here, not imported from the writer), uproot's own
reading of the file, and click's exit codes.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.simulate import SimConfig, simulate_events

HIT_BRANCHES = {
    **{f"spacePoint_globEdge{e}{c}": np.float32 for e in ("High", "Low") for c in "XYZ"},
    "spacePoint_time": np.float32, "spacePoint_driftR": np.float32,
    "spacePoint_covXX": np.float32, "spacePoint_covXY": np.float32,
    "spacePoint_covYX": np.float32, "spacePoint_covYY": np.float32,
    "spacePoint_readOutSide": np.int32, "spacePoint_channel": np.int32, "spacePoint_layer": np.int32,
    "spacePoint_stationPhi": np.int32, "spacePoint_stationEta": np.int32,
    "spacePoint_stationIndex": np.int32, "spacePoint_technology": np.int32,
    "spacePoint_truthLink": np.int32,
}
TRUTH_BRANCHES = {"truthMuon_pt": np.float32, "truthMuon_eta": np.float32, "truthMuon_phi": np.float32,
                  "truthMuon_q": np.int32}


def run(*args: str):
    return CliRunner().invoke(main, ["simulate", *args], catch_exceptions=True)


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("sim") / "raw.root"
    res = run(str(path), "--events", "300", "--seed", "3", "--background-per-event", "40")
    assert res.exit_code == 0, res.output
    with uproot.open(path) as f:
        assert f.classname_of("MuonHitDump") == "TTree"
        tree = f["MuonHitDump"]
        arrays = tree.arrays(library="ak")
        names = tree.keys()
        interp = {k: tree[k].interpretation for k in names}
    return path, arrays, interp, res.output


def test_tree_is_ttree_with_every_branch_and_dtype(dump) -> None:
    _, arrays, interp, _ = dump
    for name, dtype in {**HIT_BRANCHES, **TRUTH_BRANCHES}.items():
        assert name in interp, name
        assert interp[name].content.from_dtype.newbyteorder("=") == np.dtype(dtype), name
        assert ak.flatten(arrays[name]).to_numpy().dtype == np.dtype(dtype), name
    assert interp["eventNumber"].from_dtype.newbyteorder("=") == np.dtype(np.int64)
    assert len(arrays) == 300


def test_jagged_branches_share_counts_and_links_are_valid(dump) -> None:
    _, a, _, _ = dump
    n_hits = ak.num(a["spacePoint_time"])
    for name in HIT_BRANCHES:
        assert ak.all(ak.num(a[name]) == n_hits), name
    n_mu = ak.num(a["truthMuon_pt"])
    for name in TRUTH_BRANCHES:
        assert ak.all(ak.num(a[name]) == n_mu), name
    link = a["spacePoint_truthLink"]
    assert ak.all((link >= -1) & (link < n_mu))
    assert ak.any(link == -1) and ak.any(link >= 0)
    assert set(np.unique(ak.flatten(a["spacePoint_technology"]).to_numpy())) <= {0, 2, 3, 4, 5}
    phi = ak.flatten(a["truthMuon_phi"]).to_numpy()
    assert np.all((phi > -np.pi) & (phi <= np.pi))
    assert set(np.unique(ak.flatten(a["truthMuon_q"]).to_numpy())) == {-1, 1}
    assert np.array_equal(a["eventNumber"].to_numpy(), np.arange(300))


def test_coordinates_identifiers_and_background_are_plausible(dump) -> None:
    _, a, _, _ = dump
    flat = {k: ak.flatten(a[k]).to_numpy() for k in HIT_BRANCHES}
    for c in "XY":
        assert np.abs(flat[f"spacePoint_globEdgeLow{c}"]).max() <= 15_000
    assert np.abs(flat["spacePoint_globEdgeLowZ"]).max() <= 25_000
    assert flat["spacePoint_channel"].min() >= 0 and flat["spacePoint_channel"].max() <= 6143
    assert flat["spacePoint_stationPhi"].min() >= 1 and flat["spacePoint_stationPhi"].max() <= 16
    assert np.abs(flat["spacePoint_stationEta"]).max() <= 10 and np.all(flat["spacePoint_stationEta"] != 0)
    assert flat["spacePoint_layer"].min() >= 0 and flat["spacePoint_layer"].max() <= 10
    mdt = flat["spacePoint_technology"] == 0
    assert flat["spacePoint_driftR"][mdt].max() <= 15.0 and flat["spacePoint_driftR"].min() >= 0
    assert np.all(flat["spacePoint_driftR"][~mdt] == 0)
    assert np.all(flat["spacePoint_covXX"] > 0) and np.all(flat["spacePoint_covYY"] > 0)
    # Poisson(40) background per event: mean within 5 sigma of 40
    n_bkg = ak.sum(a["spacePoint_truthLink"] == -1, axis=1).to_numpy()
    assert abs(n_bkg.mean() - 40) < 5 * np.sqrt(40 / len(n_bkg))


def test_summary_line(dump) -> None:
    path, a, _, output = dump
    line = output.strip().splitlines()[-1]
    assert "300 events" in line and str(path) in line and " s " in line + " "
    assert f"{ak.sum(ak.num(a['spacePoint_time']))} hits" in line
    assert f"{ak.sum(ak.num(a['truthMuon_pt']))} muons" in line


def test_same_seed_same_arrays_different_seed_differs() -> None:
    cfg = SimConfig(background_per_event=20)
    a = simulate_events(120, seed=11, config=cfg)
    b = simulate_events(120, seed=11, config=cfg)
    c = simulate_events(120, seed=12, config=cfg)
    for field in a.fields:
        assert ak.array_equal(a[field], b[field]), field
    assert not ak.array_equal(a["truthMuon_pt"], c["truthMuon_pt"])
    assert not ak.array_equal(a["spacePoint_globEdgeLowX"], c["spacePoint_globEdgeLowX"])


def test_files_option_distinct_streams_and_event_numbers(tmp_path) -> None:
    out = tmp_path / "multi.root"
    res = run(str(out), "--events", "40", "--files", "2", "--seed", "5", "--background-per-event", "5",
              "--compression", "lz4")
    assert res.exit_code == 0, res.output
    files = [tmp_path / "multi_000.root", tmp_path / "multi_001.root"]
    arrs = []
    for p in files:
        with uproot.open(p) as f:
            arrs.append(f["MuonHitDump"].arrays(["eventNumber", "truthMuon_pt"]))
    e0, e1 = (x["eventNumber"].to_numpy() for x in arrs)
    assert len(e0) == len(e1) == 40 and not set(e0) & set(e1)
    assert not ak.array_equal(arrs[0]["truthMuon_pt"], arrs[1]["truthMuon_pt"])
    # the same options again (another compression: --overwrite) reproduce the files' arrays
    res2 = run(str(out), "--events", "40", "--files", "2", "--seed", "5", "--background-per-event", "5", "--overwrite")
    assert res2.exit_code == 0
    with uproot.open(files[1]) as f:
        assert ak.array_equal(f["MuonHitDump"].arrays(["truthMuon_pt"])["truthMuon_pt"], arrs[1]["truthMuon_pt"])


@pytest.mark.parametrize("spec", ["zlib", "lz4", "zstd:3", "lzma:1"])
def test_every_compression_reads_back(tmp_path, spec: str) -> None:
    out = tmp_path / "c.root"
    res = run(str(out), "--events", "10", "--background-per-event", "5", "--compression", spec)
    assert res.exit_code == 0, res.output
    with uproot.open(out) as f:
        assert f["MuonHitDump"].num_entries == 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--events", "-5"], "--events"),
        (["--events", "0"], "--events"),
        (["--compression", "brotli"], "brotli"),
        (["--compression", "zstd:99"], "level"),
        (["--muons-per-event", "one"], "--muons-per-event"),
        (["--pt-min", "50", "--pt-max", "10"], "--pt-min"),
    ],
)
def test_bad_arguments_exit_2_without_traceback(tmp_path, args: list[str], needle: str) -> None:
    res = run(str(tmp_path / "x.root"), *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.root").exists()


def test_unwritable_output_names_the_path(tmp_path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "x.root"
    res = run(str(target), "--events", "5")
    assert res.exit_code in (1, 2)
    assert str(target) in res.output and "Traceback" not in res.output
    res = run(str(tmp_path), "--events", "5")  # a directory
    assert res.exit_code in (1, 2) and "Traceback" not in res.output


def test_help_describes_options() -> None:
    res = CliRunner().invoke(main, ["simulate", "--help"])
    assert res.exit_code == 0
    for opt in ("--events", "--seed", "--files", "--background-per-event", "--compression",
                "--muons-per-event", "--pt-min", "--pt-max", "--pt-spectrum", "--max-abs-eta"):
        assert opt in res.output


def test_committed_sample_matches_the_layout() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data_samples" / "sample.root"
    assert path.stat().st_size <= 3 * 1024 * 1024
    with uproot.open(path) as f:
        assert f.classname_of("MuonHitDump") == "TTree"
        tree = f["MuonHitDump"]
        assert tree.num_entries == 500
        names = set(tree.keys())
    assert set(HIT_BRANCHES) | set(TRUTH_BRANCHES) | {"eventNumber"} <= names


def test_a_stopped_simulate_leaves_no_partial_dump(tmp_path):
    """simulate stopped by SIGTERM left a readable ROOT file with part of the events under the final name
    (it converted without complaint); it now writes a temporary and renames it when complete."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "sim.root"
    exe = Path(sys.executable).parent / "muon-pipeline"
    proc = subprocess.Popen([str(exe), "simulate", str(out), "--events", "200000", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".tmp-sim.root*")):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, text
    assert not out.exists() and not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_an_existing_file_is_never_replaced_silently(tmp_path, sample_root) -> None:
    """simulate overwrote any existing file, the shipped sample included (and a re-run of the Quick tour then
    made convert refuse its dataset: "input replaced"). Now the same command again keeps the file it wrote
    (exit 0, not a byte changed), anything else is refused with one line (exit 1) unless --overwrite."""
    import shutil

    out = tmp_path / "raw.root"
    args = ["--events", "30", "--seed", "4", "--background-per-event", "10"]
    assert run(str(out), *args).exit_code == 0
    first, mtime = out.read_bytes(), out.stat().st_mtime_ns
    res = run(str(out), *args, "--compression", "zstd:5")  # the default, spelled out: the same file
    assert res.exit_code == 0 and "kept" in res.output, res.output
    assert out.read_bytes() == first and out.stat().st_mtime_ns == mtime
    sample = tmp_path / "sample.root"
    shutil.copy(sample_root, sample)
    for path, other, why in ((out, ["--seed", "5"], "simulated with other options"),
                             (out, ["--events", "31"], "simulated with other options"),
                             (sample, [], "not written by muon-pipeline simulate")):
        before = path.read_bytes()
        res = run(str(path), *args, *other)
        assert res.exit_code == 1 and why in res.output and "--overwrite" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and str(path) in res.output
        assert path.read_bytes() == before
    res = run(str(out), *args, "--seed", "5", "--overwrite")
    assert res.exit_code == 0, res.output
    with uproot.open(out) as f:  # replaced: the events of seed 5, the same as simulate_events gives
        pt = f["MuonHitDump"]["truthMuon_pt"].array()
    expect = simulate_events(30, seed=5, config=SimConfig(background_per_event=10))["truthMuon_pt"]
    assert ak.array_equal(pt, expect)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    res = CliRunner().invoke(main, ["simulate", "--help"])
    assert "--overwrite" in res.output
