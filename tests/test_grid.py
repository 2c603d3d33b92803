"""Grid and cluster against the real services: an XRootD server and a single-node SLURM on this host.

The fixtures (tests/grid_fixtures.py) start ``xrootd``, ``munged``/``slurmctld``/``slurmd``; each test
is skipped with the reason where a program is missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from grid_fixtures import start_xrootd, xrootd_missing
from outputs import comparable, shard_bytes
from rawdump import dump_files

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.inputs import expand_inputs
from pipeline.storage import OutputDir

ARGS = ["--shard-events", "60", "--row-group-size", "25", "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    return dump_files(tmp_path_factory.mktemp("grid_inputs"), 3, seed=20)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, inputs) -> Path:
    """The inputs converted locally by one worker: what every other way must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("grid_ref") / "one-worker"
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", str(out), "-j", "1", *ARGS])
    assert r.exit_code == 0, r.output
    return out


# --------------------------------------------------------------------------------------------
# XRootD: root:// in and out
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", ["100 MB", "50"])  # a memory step is sized from the basket index
def test_root_input_converts_to_the_same_shards_as_the_local_file(tmp_path, xrootd_server, inputs, step):
    served = xrootd_server.data / f"convert{step[:2]}"
    served.mkdir()
    shutil.copy(inputs[0], served / "in0.root")
    url = xrootd_server.url(f"{served.name}/in0.root")
    r = CliRunner().invoke(main, ["convert", url, "-o", str(tmp_path / "remote"), "-j", "1", "--step-size", step, *ARGS])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["convert", inputs[0], "-o", str(tmp_path / "local"), "-j", "1", *ARGS])
    assert r.exit_code == 0, r.output
    remote, local = comparable(tmp_path / "remote"), comparable(tmp_path / "local")
    assert [i["path"] for i in remote["inputs"]] == [url]
    assert remote["inputs"][0]["size"] == os.path.getsize(inputs[0])
    assert len(remote["shards"]) == len(local["shards"]) == 3
    remote["totals"].pop("bytes"), local["totals"].pop("bytes")  # the source_file strings differ in length
    for key in ("totals", "cutflow", "statistics"):
        assert remote[key] == local[key]
    for a, b in zip(remote["shards"], local["shards"]):
        ta = pq.read_table(tmp_path / "remote" / a["path"])
        tb = pq.read_table(tmp_path / "local" / b["path"])
        assert set(ta.column("source_file").to_pylist()) <= {url}
        assert ta.drop_columns(["source_file"]).equals(tb.drop_columns(["source_file"]))
    assert CliRunner().invoke(main, ["validate", str(tmp_path / "remote")]).exit_code == 0


def test_root_directory_and_glob_list_the_same_files_as_local(tmp_path, xrootd_server, inputs):
    served = xrootd_server.data / "listing"
    local = tmp_path / "listing"
    for d in (served, local):
        (d / "sub").mkdir(parents=True)
        for name in ("b.root", "a.root", "x[1].root", "notes.txt", "sub/c.root", "d[1]/e.root", "d1/f.root"):
            (d / name).parent.mkdir(exist_ok=True)
            shutil.copy(inputs[0], d / name)
    (served / "empty").mkdir()
    host = xrootd_server.url()

    def rel(paths: list[str], base: str) -> list[str]:
        return [p[len(base):] for p in paths]

    for spec in ("listing", "listing/", "listing/*.root", "listing/[ab].root", "listing/*/*.root",
                 "listing/x[1].root", "listing/d[1]", "listing/d[1]/e.root"):
        remote = expand_inputs([host + spec])
        here = expand_inputs([str(tmp_path / spec)])
        assert rel(remote, host) == rel(here, str(tmp_path) + "/"), spec
        assert remote, spec
    assert expand_inputs([host + "listing/x[1].root"]) == [host + "listing/x[1].root"]  # literal, not a pattern
    with pytest.raises(ConfigError, match="holds no"):
        expand_inputs([host + "listing/empty"])
    with pytest.raises(ConfigError, match="matches no file"):
        expand_inputs([host + "listing/*.nothing"])
    r = CliRunner().invoke(main, ["convert", host + "listing/missing.root", "-o", str(tmp_path / "o"), *ARGS])
    assert r.exit_code == 1 and f"file {host}listing/missing.root: cannot open" in r.output


def test_root_output_is_written_atomically_and_equals_local(tmp_path, xrootd_server, inputs, reference):
    url = xrootd_server.url("out/ds")
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", url, "-j", "2", *ARGS])
    assert r.exit_code == 0, r.output
    written = xrootd_server.data / "out" / "ds"
    assert comparable(written) == comparable(reference)
    assert shard_bytes(written) == shard_bytes(reference)
    assert not [p for p in written.rglob("*") if p.name.startswith(".tmp-")]
    r = CliRunner().invoke(main, ["validate", url])
    assert r.exit_code == 0, r.output

    # the write contract, file by file: nothing under the final name until the block succeeds
    out = OutputDir(xrootd_server.url("atomic"))
    final = xrootd_server.data / "atomic" / "part.bin"
    with out.atomic("part.bin") as fh:
        fh.write(b"new" * 1000)
        fh.flush()
        assert not final.exists()
    assert final.read_bytes() == b"new" * 1000
    with pytest.raises(RuntimeError), out.atomic("part.bin") as fh:  # a failed write keeps the old file
        fh.write(b"partial")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"new" * 1000
    with out.atomic("part.bin") as fh:  # the XRootD mv replaces an existing file
        fh.write(b"v2")
    assert final.read_bytes() == b"v2"
    assert sorted(p.name for p in final.parent.iterdir()) == ["part.bin"]


def test_output_without_atomic_rename_is_refused(tmp_path, inputs):
    r = CliRunner().invoke(main, ["convert", inputs[0], "-o", "memory://muon-ds", *ARGS])
    assert r.exit_code == 2, r.output
    assert "cannot write to memory://muon-ds" in r.output and "no atomic rename" in r.output


def test_stalled_xrootd_server_is_a_named_error_within_the_timeout(tmp_path, inputs, monkeypatch):
    """SIGSTOP the server before the open, and between two chunk reads of a unit."""
    reason = xrootd_missing()
    if reason:
        pytest.skip(reason)
    server = start_xrootd()  # its own server: a stopped one must not disturb the other tests
    try:
        shutil.copy(inputs[0], server.data / "in0.root")
        url = server.url("in0.root")
        import pipeline.units as units

        real = units.read_chunk
        calls = {"n": 0}

        def pause_on_second_chunk(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                server.pause()
            return real(*args, **kwargs)

        monkeypatch.setattr(units, "read_chunk", pause_on_second_chunk)
        t0 = time.monotonic()
        r = CliRunner().invoke(main, ["convert", url, "-o", str(tmp_path / "mid"), "-j", "1", "--step-size", "25",
                                      "--remote-timeout", "2", *ARGS])
        took = time.monotonic() - t0
        server.resume()
        # the chunk read right after the pause may still be served from baskets already fetched: the
        # error comes at the first read that needs the (stopped) server, naming its entries
        assert calls["n"] >= 2
        assert r.exit_code == 1, r.output
        m = re.search(rf"file {re.escape(url)}, entry (\d+): cannot read entries (\d+)-(\d+) \(no answer from "
                      r"the server within 2 s", r.output)
        assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 25, r.output
        assert took < 15
        shards = tmp_path / "mid" / "shards"  # a failed first run leaves no folder, or an empty one
        assert not shards.exists() or not list(shards.iterdir())  # no shard, not even a temporary

        server.pause()
        t0 = time.monotonic()
        r = CliRunner().invoke(main, ["convert", url, "-o", str(tmp_path / "open"), "--remote-timeout", "2", *ARGS])
        took = time.monotonic() - t0
        assert r.exit_code == 1, r.output
        assert f"file {url}: cannot list (no answer from the server within 2 s" in r.output
        assert took < 15
    finally:
        from grid_fixtures import _stop

        _stop(server.pidfile)
        shutil.rmtree(server.base, ignore_errors=True)


def test_stalled_output_server_is_a_named_error_and_leaves_no_shard(tmp_path, inputs, monkeypatch):
    """SIGSTOP the XRootD server that receives the output while a shard is being written."""
    reason = xrootd_missing()
    if reason:
        pytest.skip(reason)
    server = start_xrootd()
    try:
        import pipeline.units as units

        real = units.read_chunk

        def pause_then_read(*args, **kwargs):
            server.pause()  # the shard's temporary is open on the server by now
            return real(*args, **kwargs)

        monkeypatch.setattr(units, "read_chunk", pause_then_read)
        t0 = time.monotonic()
        r = CliRunner().invoke(main, ["convert", inputs[0], "-o", server.url("ds"), "-j", "1", "--remote-timeout", "2",
                                      *ARGS])
        took = time.monotonic() - t0
        server.resume()
        assert r.exit_code == 1, r.output
        assert r.output.startswith(f"Error: cannot write {server.url('ds')}/shards/part-")
        assert "(no answer from the server within 2 s" in r.output and len(r.output.strip().splitlines()) == 1
        assert took < 20
        assert not [p for p in (server.data / "ds" / "shards").iterdir() if p.name.startswith("part-")]
    finally:
        from grid_fixtures import _stop

        _stop(server.pidfile)
        shutil.rmtree(server.base, ignore_errors=True)


def test_missing_grid_packages_give_the_install_hint(tmp_path, monkeypatch, inputs):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("XRootD", "fsspec_xrootd") else real(name, *a))
    for args in (["convert", "root://127.0.0.1:1//x.root", "-o", str(tmp_path / "a")],
                 ["convert", inputs[0], "-o", "root://127.0.0.1:1//ds"]):
        r = CliRunner().invoke(main, [*args, *ARGS])
        assert r.exit_code == 2, r.output
        assert "root:// needs xrootd and fsspec-xrootd" in r.output and "pip install 'muon-pipeline[grid]'" in r.output
    if importlib.util.find_spec("dask_jobqueue") is not None:  # installed, but no SLURM on PATH
        monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None)
        r = CliRunner().invoke(main, ["convert", inputs[0], "-o", str(tmp_path / "c"), "--scheduler", "slurm", *ARGS])
        assert r.exit_code == 2 and "sbatch, which is not on PATH" in r.output, r.output
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails
    r = CliRunner().invoke(main, ["convert", inputs[0], "-o", str(tmp_path / "b"), "--scheduler", "slurm", *ARGS])
    assert r.exit_code == 2 and "--scheduler slurm needs dask-jobqueue" in r.output and "[grid]" in r.output


# --------------------------------------------------------------------------------------------
# SLURM: job arrays, generated scripts, Dask workers as jobs
# --------------------------------------------------------------------------------------------

PY = [sys.executable, "-m", "pipeline"]


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")  # one test SLURM per session: its tests share an xdist worker
def test_sbatch_array_of_4_tasks_plus_finalize_equals_one_local_worker(tmp_path, slurm, inputs, reference):
    out = tmp_path / "array"
    task = " ".join([*PY, "convert", *inputs, "-o", str(out), "--task-index", "$SLURM_ARRAY_TASK_ID",
                     "--task-count", "4", "-j", "1", *ARGS])
    job = slurm.sbatch("--array=0-3", f"--output={tmp_path}/task-%a.log", f"--chdir={tmp_path}", f"--wrap={task}")
    slurm.wait(90)
    assert slurm.exit_codes(job) == ["0:0"] * 4, [p.read_text() for p in tmp_path.glob("task-*.log")]
    runs = [json.loads(p.read_text())["unit"]["index"] for p in (out / "_work" / "units").iterdir()]
    assert sorted(runs) == list(range(len(runs)))
    r = CliRunner().invoke(main, ["finalize", str(out)])
    assert r.exit_code == 0, r.output
    assert comparable(out) == comparable(reference)
    assert shard_bytes(out) == shard_bytes(reference)


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_generated_slurm_script_runs_as_submitted(tmp_path, slurm, inputs, reference, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["submit-script", "--system", "slurm", "--tasks", "4", "--script", "convert.sh",
                                  "--", *inputs, "-o", "my 'ds'", *ARGS])  # quoting survives bash and --wrap
    assert r.exit_code == 0, r.output
    script = (tmp_path / "convert.sh").read_text()
    assert "#SBATCH --array=0-3" in script and "--task-count 4" in script
    job = slurm.sbatch(str(tmp_path / "convert.sh"))
    slurm.wait(90)
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").iterdir()}
    assert slurm.exit_codes(job) == ["0:0"] * 4, logs
    assert len([n for n in logs if "finalize" in n]) == 1, logs
    assert comparable(tmp_path / "my 'ds'") == comparable(reference)
    assert shard_bytes(tmp_path / "my 'ds'") == shard_bytes(reference)


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_dask_workers_as_slurm_jobs_give_the_same_dataset(tmp_path, slurm, inputs, reference):
    import dask

    if importlib.util.find_spec("dask_jobqueue") is None:
        pytest.skip("dask-jobqueue is not installed: pip install -e '.[grid]'")
    out = tmp_path / "dask"
    with dask.config.set({"jobqueue.slurm.interface": "lo", "jobqueue.slurm.log-directory": str(tmp_path / "logs"),
                          "jobqueue.slurm.walltime": "00:10:00"}):
        r = CliRunner().invoke(main, ["convert", *inputs, "-o", str(out), "--scheduler", "slurm", "-j", "2", *ARGS])
    assert r.exit_code == 0, r.output
    assert comparable(out) == comparable(reference)
    assert shard_bytes(out) == shard_bytes(reference)
    jobs = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, env=slurm.env).stdout
    assert sum("JobName=dask-worker" in line for line in jobs.splitlines()) == 2, jobs


def test_htcondor_submit_file_arguments_round_trip(tmp_path, inputs, monkeypatch):
    """No HTCondor here: the submit description is checked against HTCondor's documented rules for
    ``arguments`` (new syntax) by an independent parser, and for ``queue``."""
    monkeypatch.chdir(tmp_path)
    odd = ["--min-pt", "3", "-o", "my 'odd' \"ds\""]
    r = CliRunner().invoke(main, ["submit-script", "--system", "htcondor", "--tasks", "3", "--cpus", "2",
                                  "--memory", "3G", "--", *inputs, *odd])
    assert r.exit_code == 0, r.output
    lines = dict(line.split("=", 1) for line in r.output.splitlines() if "=" in line and not line.startswith("#"))
    lines = {k.strip(): v.strip() for k, v in lines.items()}
    assert r.output.rstrip().endswith("queue 3")
    assert lines["executable"] == sys.executable and lines["request_cpus"] == "2" and lines["request_memory"] == "3G"
    assert _parse_condor_arguments(lines["arguments"]) == [
        "-m", "pipeline", "convert", *inputs, *odd, "-j", "2", "--task-index", "$(Process)", "--task-count", "3"]
    r = CliRunner().invoke(main, ["submit-script", "--system", "htcondor", "--tasks", "3", "--", inputs[0], "-o",
                                  "d", "--scheduler", "local"])
    assert r.exit_code == 2 and "--scheduler" in r.output


def _parse_condor_arguments(value: str) -> list[str]:
    """HTCondor manual, condor_submit, 'arguments' new syntax: surrounded by double quotes; "" is a
    literal double quote; white space separates arguments unless inside single quotes; '' inside single
    quotes is a literal single quote."""
    assert value.startswith('"') and value.endswith('"')
    s = value[1:-1].replace('""', "\0")
    args, cur, quoted, i, has = [], "", False, 0, False
    while i < len(s):
        c = s[i]
        if quoted:
            if c == "'" and s[i + 1: i + 2] == "'":
                cur, i = cur + "'", i + 2
                continue
            if c == "'":
                quoted = False
            else:
                cur += c
        elif c == "'":
            quoted, has = True, True
        elif c in " \t":
            if cur or has:
                args.append(cur)
            cur, has = "", False
        else:
            cur += c
        i += 1
    if cur or has:
        args.append(cur)
    return [a.replace("\0", '"') for a in args]


def test_a_file_name_that_is_not_utf8_is_one_line(tmp_path):
    """A Latin-1 file name (an old disk, a tarball) ended convert in a 45-line UnicodeEncodeError traceback,
    after the plan was written."""
    import os

    from pipeline.errors import ConfigError

    name = os.fsdecode(b"caf\xe9.root")  # undecodable byte -> surrogate escape, as os.listdir gives it
    (tmp_path / name).write_bytes(b"not read")
    with pytest.raises(ConfigError, match="not UTF-8"):
        expand_inputs([str(tmp_path)])
    r = CliRunner().invoke(main, ["convert", str(tmp_path), "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == 2 and "not UTF-8" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
