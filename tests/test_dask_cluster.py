"""An external Dask cluster as a cluster user runs it: workers started in another folder than the command,
a worker that does not see a file, a scheduler that is gone before the run or dies during it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cluster_fixtures import BIN, dask_cluster, dask_processes
from rawdump import random_events, write_dump

from pipeline.cli import main

ARGS = ["--shard-events", "60", "--row-group-size", "25", "-q"]

pytestmark = pytest.mark.slow


def _tree(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


@pytest.fixture
def client_dir(tmp_path, monkeypatch) -> Path:
    """The folder the command is typed in, holding in/a.root and in/b.root; the current folder of the test."""
    here = tmp_path / "client"
    (here / "in").mkdir(parents=True)
    for i, name in enumerate(("a", "b")):
        write_dump(here / "in" / f"{name}.root", random_events(130, seed=70 + i))
    monkeypatch.chdir(here)
    return here


def test_relative_paths_reach_workers_started_elsewhere(tmp_path, client_dir):
    """Workers started in another folder resolved `-o relds` and `in/a.root` against their own folder: the
    shards went there (or the input was "no such file") and the client said "re-run", which never finished.
    Now the paths leave the client absolute, while the plan, the records and source_file keep the spelling
    typed; the dataset is the one a local run makes, byte for byte."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with dask_cluster(2, cwd=elsewhere) as addr:
        r = CliRunner().invoke(main, ["convert", "in/a.root", "in/b.root", "-o", "relds", "--scheduler", addr, *ARGS])
    assert r.exit_code == 0, r.output
    assert _tree(elsewhere) == []  # nothing written where the workers run
    r = CliRunner().invoke(main, ["convert", "in/a.root", "in/b.root", "-o", "local", "-j", "1", *ARGS])
    assert r.exit_code == 0, r.output
    remote, local = (json.loads((client_dir / d / "_manifest.json").read_text()) for d in ("relds", "local"))
    for m in (remote, local):
        m.pop("timing")
    assert remote == local  # inputs, units, shard checksums: the same spelling and the same bytes
    assert [i["path"] for i in remote["inputs"]] == ["in/a.root", "in/b.root"]
    plan = json.loads((client_dir / "relds" / "_work" / "plan.json").read_text())
    assert {u["input"] for u in plan["units"]} == {"in/a.root", "in/b.root"}
    for rec in (client_dir / "relds" / "_work" / "units").glob("*.json"):
        assert json.loads(rec.read_text())["unit"]["input"] in ("in/a.root", "in/b.root")
    import pyarrow.parquet as pq

    files = pq.read_table(client_dir / "relds" / remote["shards"][0]["path"], columns=["source_file"])
    assert set(files.column("source_file").to_pylist()) <= {"in/a.root", "in/b.root"}


def test_a_worker_that_does_not_see_an_input_says_so(tmp_path, client_dir, monkeypatch):
    """A worker that cannot see an input (another host, a container) reported "no such file" for a file that
    exists where the command was typed. Here the input disappears once the plan is written, so only the
    worker looks for it: the message names the input as typed and the worker, and nothing is produced."""
    from pipeline.plan import Plan

    real_write = Plan.write

    def write_then_hide(self, out):
        real_write(self, out)
        shutil.move(client_dir / "in", tmp_path / "hidden")

    monkeypatch.setattr(Plan, "write", write_then_hide)
    with dask_cluster(1, cwd=tmp_path) as addr:
        r = CliRunner().invoke(main, ["convert", "in/a.root", "-o", "relds", "--scheduler", addr, *ARGS])
    assert r.exit_code == 2, r.output
    assert "input in/a.root not found on worker tcp://127.0.0.1:" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not list((client_dir / "relds").glob("shards/*"))  # nothing produced: the worker wrote nothing


def _slow_input(d: Path) -> Path:
    path = d / "many.root"
    write_dump(path, random_events(1500, seed=5), basket_entries=100)
    return path


def test_a_scheduler_gone_before_the_run_is_one_line(tmp_path):
    """A scheduler that was started, then stopped before the command connects: one line naming it, exit 2."""
    path = _slow_input(tmp_path)
    with dask_processes(1) as cluster:
        cluster.scheduler.kill()
        cluster.scheduler.wait()
        cmd = [str(BIN / "muon-pipeline"), "convert", str(path), "-o", str(tmp_path / "ds"), "--scheduler",
               cluster.address, *ARGS]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"})
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert f"cannot reach the Dask scheduler at {cluster.address}" in text and "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "ds").exists()


def test_a_scheduler_killed_during_the_run_is_one_line_and_the_run_resumes(tmp_path):
    """kill -9 of the scheduler while units run ended in a 77-line traceback (FutureCancelledError, the
    client's reconnect log). Now: one line naming the scheduler and what to do, exit 2; the finished units
    are kept and the same command, on a new scheduler, completes the dataset."""
    path = _slow_input(tmp_path)
    out = tmp_path / "ds"
    args = [str(path), "-o", str(out), "--shard-events", "50", "--step-size", "2", "-q"]
    with dask_processes(1) as cluster:
        proc = subprocess.Popen([str(BIN / "muon-pipeline"), "convert", *args, "--scheduler", cluster.address],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        records = out / "_work" / "units"
        deadline = time.time() + 120
        while time.time() < deadline and not (records.exists() and any(records.iterdir())) and proc.poll() is None:
            time.sleep(0.02)
        cluster.scheduler.send_signal(signal.SIGKILL)
        text, _ = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the conversion ended before the scheduler was killed")
    assert proc.returncode == 2, text
    assert f"lost the Dask scheduler at {cluster.address}" in text and "re-run the same command" in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert (out / "_work" / "plan.json").exists()  # units finished: the plan stays, the run resumes
    with dask_cluster(1) as addr:
        r = CliRunner().invoke(main, ["convert", *args, "--scheduler", addr])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["validate", str(out)])
    assert r.exit_code == 0, r.output
