"""filter: a derived dataset equals a slow per-event reference, resumes after kill -9, a job array equals a
local run, changed or foreign parents and scores are refused by name, validate catches planted lineage
mismatches, and the trainer reads a derived dataset."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from derived import cli, make_scores, parent_dataset, reference_filter, reference_threshold, same_rows
from outputs import comparable, shard_bytes

from pipeline import read_dataset
from pipeline.validate import validate_dataset

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> tuple[Path, Path]:
    """(a converted dataset of 160 simulated events in 4 units, its scores); read-only for tests."""
    root = tmp_path_factory.mktemp("filter")
    ds = parent_dataset(root)
    return ds, make_scores(ds, root / "scores")


@pytest.mark.parametrize(("how", "caps"), [(("--threshold", "0.9"), ()),
                                           (("--working-point", "0.8"), ()),
                                           (("--working-point", "0.9"), (2, 40)),
                                           (("--threshold", "0.5"), (1, None))])
def test_filter_equals_per_event_reference(parent, tmp_path, how, caps):
    ds, scores = parent
    out = tmp_path / "f"
    cap_args = []
    if caps:
        cap_args = ["--max-muons-per-event", caps[0]] + (["--max-hits-per-event", caps[1]] if caps[1] else [])
    cli("filter", ds, "--scores", scores, *how, *cap_args, "-o", out, "-j", "1", "-q")
    m = json.loads((out / "_manifest.json").read_text())
    threshold = float(how[1]) if how[0] == "--threshold" else reference_threshold(ds, scores, float(how[1]))
    assert m["lineage"]["threshold"] == threshold
    want, n = reference_filter(ds, scores, threshold, caps[0] if caps else None, caps[1] if caps else None)
    same_rows(read_dataset(str(out)).to_pylist(), want)
    f = m["filter_cutflow"]
    assert (f["hits_below_threshold"], f["muons_fail_hits"], f["events_no_muon"], f["events_capped_muons"],
            f["events_capped_hits"], f["muons_capped"], f["hits_capped"], f["hits_in_events_no_muon"]) == (
        n["below"], n["fail_hits"], n["no_muon"], n["capped_muons"], n["capped_hits"], n["muons_capped"],
        n["hits_capped"], n["hits_no_muon"])
    parent_m = json.loads((ds / "_manifest.json").read_text())
    assert (f["events_in"], f["hits_in"], f["muons_in"]) == (parent_m["totals"]["events"], parent_m["totals"]["hits"],
                                                             parent_m["totals"]["muons"])
    assert validate_dataset(str(out), source="all").ok


def test_working_point_is_the_largest_threshold_reaching_the_efficiency(parent, tmp_path):
    ds, scores = parent
    out = tmp_path / "f"
    cli("filter", ds, "--scores", scores, "--working-point", "0.85", "-o", out, "-j", "1", "-q")
    f = json.loads((out / "_manifest.json").read_text())["filter_cutflow"]
    t = json.loads((out / "_manifest.json").read_text())["lineage"]["threshold"]
    # at the threshold: efficiency >= wp; every muon-hit score above it falls short
    assert f["hits_on_muons_passing"] / f["hits_on_muons_in"] >= 0.85
    from derived import read_rows, read_score_rows

    per_shard, at, above = read_score_rows(scores), {}, []
    for rel, row in read_rows(ds):
        i = at.get(rel, 0)
        at[rel] = i + 1
        above += [s for h, s in zip(row["hits"], per_shard[rel][i]) if h["spacePoint_truthLink"] >= 0 and s > t]
    assert len(above) / f["hits_on_muons_in"] < 0.85


def test_job_array_and_finalize_equal_a_local_run(parent, tmp_path):
    ds, scores = parent
    args = ["--working-point", "0.9", "--max-hits-per-event", "60"]
    cli("filter", ds, "--scores", scores, *args, "-o", tmp_path / "local", "-j", "2", "-q")
    array = tmp_path / "array"
    for k in (2, 0, 1):
        out = cli("filter", ds, "--scores", scores, *args, "-o", array, "--task-index", k, "--task-count", 3, "-q")
        assert "finalize" in out
    assert not (array / "_manifest.json").exists()
    cli("finalize", array)
    assert comparable(array) == comparable(tmp_path / "local")
    assert shard_bytes(array) == shard_bytes(tmp_path / "local")


def test_kill_9_then_rerun_gives_identical_shards(parent, tmp_path):
    ds, scores = parent
    args = ["--scores", str(scores), "--threshold", "0.6", "-j", "1", "-q"]
    cli("filter", ds, *args, "-o", tmp_path / "reference")
    out = tmp_path / "killed"
    proc = subprocess.Popen([str(BIN / "muon-pipeline"), "filter", str(ds), *args, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    records = out / "_work" / "units"
    while time.time() < deadline and not (records.exists() and any(records.iterdir())) and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.1))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for shard in (out / "shards").glob("part-*.parquet"):
        pq.ParquetFile(shard).metadata  # noqa: B018 - raises on a partial file
    cli("filter", ds, *args, "-o", out)
    assert comparable(out) == comparable(tmp_path / "reference")
    assert shard_bytes(out) == shard_bytes(tmp_path / "reference")


def test_scores_for_another_dataset_are_refused_by_name(parent, tmp_path):
    ds, scores = parent
    other = parent_dataset(tmp_path, 60, 5, 50, "--min-hits", "4")
    other_scores = make_scores(other, tmp_path / "other_scores")
    out = cli("filter", ds, "--scores", other_scores, "--threshold", "0.5", "-o", tmp_path / "f", code=1)
    assert f"--scores {other_scores} are for dataset" in out and f"not for {ds}" in out
    assert "Traceback" not in out and not (tmp_path / "f").exists()


def test_changed_parent_and_changed_scores_are_refused_by_name(parent, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(parent[0], ds)
    scores = make_scores(ds, tmp_path / "scores")
    out = tmp_path / "f"
    cli("filter", ds, "--scores", scores, "--threshold", "0.7", "-o", out, "-q")
    # other scores for the same parent: the output was planned with the first ones
    other = make_scores(ds, tmp_path / "scores2", salt=3.1)
    msg = cli("filter", ds, "--scores", other, "--threshold", "0.7", "-o", out, code=2)
    assert f"the scores {other} differ from those {out} was planned with" in msg
    # the parent changes (its manifest is rewritten: a finalize after any change to it; a finalize with
    # nothing changed rewrites nothing): the old scores no longer fit it ...
    cli("finalize", ds)
    msg = cli("filter", ds, "--scores", scores, "--threshold", "0.7", "-o", out, "-q")  # unchanged: resumes
    doc = json.loads((ds / "_manifest.json").read_text())
    doc["timing"]["finalized_at"] = "2000-01-01T00:00:00+00:00"
    (ds / "_manifest.json").write_text(json.dumps(doc))
    msg = cli("filter", ds, "--scores", scores, "--threshold", "0.7", "-o", out, code=1)
    assert f"--scores {scores} were made for" in msg and "manifest has changed since" in msg
    # ... and with fresh scores the existing output, planned from the old parent, is refused
    fresh = make_scores(ds, tmp_path / "scores3")
    msg = cli("filter", ds, "--scores", fresh, "--threshold", "0.7", "-o", out, code=2)
    assert f"the parent dataset {ds} has changed since {out} was planned" in msg
    # validate names the lineage break of the finished output
    report = validate_dataset(str(out), check_values=False)
    assert any(p.check == "lineage" and "parent" in p.message for p in report.problems)
    # --reconfigure redoes it
    cli("filter", ds, "--scores", fresh, "--threshold", "0.7", "-o", out, "-q", "--reconfigure")
    assert validate_dataset(str(out), source="all").ok


def test_a_changed_parent_shard_is_refused_when_its_unit_runs(parent, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(parent[0], ds)
    scores = make_scores(ds, tmp_path / "scores")
    shard = sorted((ds / "shards").iterdir())[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # bit rot after the manifest was written
    shard.write_bytes(bytes(data))
    msg = cli("filter", ds, "--scores", scores, "--threshold", "0.7", "-o", tmp_path / "f", "-j", "1", code=1)
    assert shard.name in msg and "changed since the plan" in msg and "muon-pipeline validate" in msg and "--task-index" not in msg and "Traceback" not in msg


def _plant_shard(target: Path, source: Path) -> None:
    """Put ``source``'s values in ``target``'s shard with ``target``'s own identity metadata, and make the
    manifest entry agree (bytes, sha256, counts): only a re-derivation can tell."""
    import hashlib

    m = json.loads((target / "_manifest.json").read_text())
    entry = m["shards"][1]
    mine = pq.ParquetFile(target / entry["path"]).schema_arrow.metadata
    theirs = json.loads((source / "_manifest.json").read_text())["shards"][1]
    table = pq.read_table(source / theirs["path"])
    pq.write_table(table.replace_schema_metadata(mine), target / entry["path"], compression="zstd",
                   use_dictionary=["source_file"], write_statistics=False)
    data = (target / entry["path"]).read_bytes()
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), rows=theirs["rows"], hits=theirs["hits"],
                 muons=theirs["muons"])
    (target / "_manifest.json").write_text(json.dumps(m))


def test_validate_source_catches_planted_lineage_mismatches(parent, tmp_path):
    ds, scores = parent
    good, other = tmp_path / "good", tmp_path / "other"
    cli("filter", ds, "--scores", scores, "--threshold", "0.7", "-o", good, "-q")
    cli("filter", ds, "--scores", scores, "--threshold", "0.6", "-o", other, "-q")
    assert validate_dataset(str(good), source="all").ok
    planted = tmp_path / "planted"
    shutil.copytree(good, planted)
    _plant_shard(planted, other)  # a shard filtered at another threshold
    rel = json.loads((planted / "_manifest.json").read_text())["shards"][1]["path"]
    report = validate_dataset(str(planted), check_values=False, source="all")
    assert [p for p in report.problems if p.check == "source" and p.shard == rel], report.problems
    assert not [p for p in report.problems if p.check not in ("source", "counts")], report.problems

    # scores edited after writing, their checksums recomputed
    edited = tmp_path / "edited_scores"
    shutil.copytree(scores, edited)
    derived = tmp_path / "derived"
    cli("filter", ds, "--scores", edited, "--threshold", "0.7", "-o", derived, "-q")
    sm = json.loads((edited / "_manifest.json").read_text())
    f = sm["files"][0]
    t = pq.read_table(edited / f["path"])
    lists = t.column("score").to_pylist()
    lists[0] = [1.0 - s for s in lists[0]]
    import hashlib

    import pyarrow as pa

    pq.write_table(t.set_column(1, "score", pa.array(lists, pa.list_(pa.float32()))), edited / f["path"])
    f["sha256"] = hashlib.sha256((edited / f["path"]).read_bytes()).hexdigest()
    (edited / "_manifest.json").write_text(json.dumps(sm))
    report = validate_dataset(str(derived), source=1)
    assert any(p.check == "lineage" and "scores" in p.message and "changed since" in p.message
               for p in report.problems), report.problems
    assert any(p.check == "source" for p in report.problems)


def test_inspect_shows_the_lineage_chain(parent, tmp_path):
    ds, scores = parent
    first, second = tmp_path / "first", tmp_path / "second"
    cli("filter", ds, "--scores", scores, "--threshold", "0.5", "-o", first, "-q")
    make_scores(first, tmp_path / "scores2")
    cli("filter", first, "--scores", tmp_path / "scores2", "--threshold", "0.6", "--max-muons-per-event", 2,
        "-o", second, "-q")
    info = json.loads(cli("inspect", second, "--json", "--no-scan"))
    chain = info["lineage"]
    assert [s["parent"] for s in chain] == [str(first), str(ds)]
    assert [s["threshold"] for s in chain] == [0.6, 0.5] and chain[0]["caps"]["max_muons_per_event"] == 2
    assert all(s["state"] == "unchanged" and s["scores_state"] == "unchanged" for s in chain)
    assert info["filter_cutflow"]["hits_in"] == info["cutflow"]["hits_in"]  # the filter's own counters too
    text = cli("inspect", second, "--no-scan")
    assert "lineage (derived from, nearest first)" in text and text.count("unchanged") == 4
    assert "filter: hits_below_threshold" in text
    assert validate_dataset(str(second), source="all").ok
    # scores moved away: the chain says so for the scores, not only for the parent
    (tmp_path / "scores2").rename(tmp_path / "moved")
    chain = json.loads(cli("inspect", second, "--json", "--no-scan"))["lineage"]
    assert chain[0]["state"] == "unchanged" and chain[0]["scores_state"] == "not reachable"


def test_usage_errors_exit_2_in_one_line(parent, tmp_path):
    ds, scores = parent
    for args, needle in ((["--threshold", "0.5", "--working-point", "0.9"], "exactly one of"),
                         ([], "exactly one of"),
                         (["--working-point", "1.5"], "--working-point"),
                         (["--threshold", "0.5", "--max-hits-per-event", "0"], "--max-hits-per-event")):
        out = cli("filter", ds, "--scores", scores, *args, "-o", tmp_path / "f", code=2)
        assert needle in out and "Traceback" not in out
    out = cli("filter", ds, "--scores", scores, "--threshold", "0.5", "-o", ds / "inner", code=2)
    assert "inside the dataset folder" in out
    out = cli("filter", ds, "--scores", tmp_path / "none", "--threshold", "0.5", "-o", tmp_path / "f", code=1)
    assert "no such folder" in out


def test_migrate_refuses_a_derived_dataset(parent, tmp_path):
    ds, scores = parent
    cli("filter", ds, "--scores", scores, "--threshold", "0.5", "-o", tmp_path / "f", "-q")
    out = cli("migrate", tmp_path / "f", "--to-version", 3, "-o", tmp_path / "m", code=2)
    assert "derived dataset" in out


@pytest.mark.slow
def test_trainer_trains_on_a_derived_dataset(parent, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from test_train_e2e import TINY

    ds, scores = parent
    cli("filter", ds, "--scores", scores, "--threshold", "0.4", "-o", tmp_path / "f", "-q")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("max_epochs: 2", "max_epochs: 1").replace("batch_size: 32", "batch_size: 8"))
    cli("train", "--config", cfg, "--data", tmp_path / "f", "--output", tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 1


def test_submit_script_runs_a_filter_job_array_then_finalize(parent, tmp_path, monkeypatch):
    """The SLURM script of `submit-script --job filter`, its tasks run by hand (a stand-in sbatch records the
    finalize job task 0 submits): the same dataset as one local run."""
    ds, scores = parent
    args = ["--scores", str(scores), "--working-point", "0.9"]
    cli("filter", ds, *args, "-o", tmp_path / "local", "-q")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path}/sbatch.args\necho 1\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    cli("submit-script", "--system", "slurm", "--job", "filter", "--tasks", 3, "--script", "filter.sh", "--",
        ds, *args, "-o", tmp_path / "array", "-q")
    text = (tmp_path / "filter.sh").read_text()
    assert "job-array task(s) of filter" in text and "-m pipeline filter" in text
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": os.pathsep.join(sys.path)}
    for k in range(3):
        r = subprocess.run(["bash", "filter.sh"], env={**env, "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_JOB_ID": "1"}, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    wrap = next(a for a in (tmp_path / "sbatch.args").read_text().splitlines() if a.startswith("--wrap="))
    subprocess.run(wrap.removeprefix("--wrap="), shell=True, env=env, check=True, capture_output=True)
    assert comparable(tmp_path / "array") == comparable(tmp_path / "local")
    assert shard_bytes(tmp_path / "array") == shard_bytes(tmp_path / "local")
