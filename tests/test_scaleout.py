"""Scale-out and fault tolerance: executors agree, resume after kill -9, bad inputs, remote I/O."""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uproot
from click.testing import CliRunner
from cluster_fixtures import dask_cluster
from outputs import comparable
from rawdump import dump_files, random_events, write_dump

from pipeline.cli import main

BIN = Path(sys.executable).parent
ARGS = ["--shard-events", "60", "--row-group-size", "25", "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    return dump_files(tmp_path_factory.mktemp("inputs"), 3, seed=10)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, inputs) -> Path:
    out = tmp_path_factory.mktemp("ref") / "one-worker"
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", str(out), "-j", "1", *ARGS])
    assert r.exit_code == 0, r.output
    return out


def test_two_workers_identical(tmp_path, inputs, reference):
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", str(tmp_path / "two"), "-j", "2", *ARGS])
    assert r.exit_code == 0, r.output
    assert comparable(tmp_path / "two") == comparable(reference)


def test_job_array_identical_and_finalize_lists_missing(tmp_path, inputs, reference):
    out = str(tmp_path / "array")
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", out, "--task-index", "1", "--task-count", "2", *ARGS])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["finalize", out])
    assert r.exit_code == 1 and "units are not finished" in r.output and "unit 0:" in r.output
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", out, "--task-index", "0", "--task-count", "2", *ARGS])
    assert r.exit_code == 0, r.output
    assert CliRunner().invoke(main, ["finalize", out]).exit_code == 0
    assert comparable(Path(out)) == comparable(reference)


@pytest.mark.slow
def test_dask_cluster_identical(tmp_path, inputs, reference):
    """A real `dask scheduler` and `dask worker` on loopback, as a cluster user would run them."""
    with dask_cluster(2) as addr:
        r = CliRunner().invoke(main, ["convert", *inputs, "-o", str(tmp_path / "dask"), "--scheduler", addr, *ARGS])
        assert r.exit_code == 0, r.output
        assert comparable(tmp_path / "dask") == comparable(reference)
        # Two users convert the same inputs into two outputs at once on the shared scheduler: the task keys
        # were the unit keys alone, so the second run's tasks were the first's ("units are not finished").
        runs = [subprocess.Popen([str(BIN / "muon-pipeline"), "convert", *inputs, "-o", str(tmp_path / name),
                                  "--scheduler", addr, *ARGS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for name in ("a", "b")]
        for name, run in zip(("a", "b"), runs):
            out, _ = run.communicate(timeout=120)
            assert run.returncode == 0, out
            assert comparable(tmp_path / name) == comparable(reference)


def test_resume_after_kill_is_identical(tmp_path, inputs, reference):
    out = tmp_path / "killed"
    cmd = [str(BIN / "muon-pipeline"), "convert", *inputs, "-o", str(out), "-j", "1", "--step-size", "7", *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "_work" / "units"
    deadline = time.time() + 60
    while time.time() < deadline and not (records.exists() and any(records.iterdir())):
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # whatever was killed mid-write is invisible: every visible shard is complete and recorded
    for shard in (out / "shards").glob("part-*.parquet"):
        import pyarrow.parquet as pq

        pq.ParquetFile(shard).metadata  # noqa: B018 - raises on a partial file
    r = CliRunner().invoke(main, ["convert", *inputs, "-o", str(out), "-j", "1", *ARGS])
    assert r.exit_code == 0, r.output
    assert comparable(out) == comparable(reference)
    assert not [p for p in (out / "shards").iterdir() if not p.name.startswith("part-")]


def _children(pid: int) -> list[int]:
    """Direct child pids of ``pid``, from /proc (Linux)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_pool_workers_end_when_the_main_process_is_killed(tmp_path, inputs):
    """Issue 9, case 6: kill -9 of the main process under -j N left its pool workers alive for good."""
    out = tmp_path / "orphans"
    cmd = [str(BIN / "muon-pipeline"), "convert", *inputs, "-o", str(out), "-j", "2", "--step-size", "5", *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.02)
    assert len(workers) >= 2, "the pool never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if _alive(w)]
    for w in alive:  # leave nothing behind whatever the outcome
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their parent"


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.root"
    write_dump(good, random_events(120, seed=3), compression=uproot.ZLIB(4))
    data = good.read_bytes()
    files = {"good": good}
    (d / "truncated.root").write_bytes(data[: len(data) // 2])
    files["truncated"] = d / "truncated.root"
    flipped = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        flipped[i] ^= 0xFF
    (d / "corrupt_basket.root").write_bytes(bytes(flipped))
    files["corrupt_basket"] = d / "corrupt_basket.root"
    (d / "not_root.root").write_text("this is not a ROOT file\n")
    files["not_root"] = d / "not_root.root"
    files["missing"] = d / "missing.root"
    write_dump(d / "other_tree.root", random_events(10), tree="Events")
    files["other_tree"] = d / "other_tree.root"
    ev = random_events(10)
    ev["spacePoint"] = ev["spacePoint"][[f for f in ev["spacePoint"].fields if f != "driftR"]]
    write_dump(d / "no_branch.root", ev)
    files["no_branch"] = d / "no_branch.root"
    ev = random_events(10)
    import awkward as ak

    ev["spacePoint"] = ak.with_field(ev["spacePoint"], ak.values_astype(ev["spacePoint"].truthLink, np.float32) + 0.5,
                                     "truthLink")  # a float branch fills an int field with whole numbers only
    write_dump(d / "wrong_dtype.root", ev)
    files["wrong_dtype"] = d / "wrong_dtype.root"
    write_dump(d / "empty.root", {k: v[:0] for k, v in random_events(5).items()})
    files["empty"] = d / "empty.root"
    return files


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("not_root", "cannot open as a ROOT file"),
    ("truncated", "file is truncated"),
    ("corrupt_basket", "cannot read entries 0-120 of branch 'spacePoint_"),  # names the damaged branch
    ("other_tree", "no tree 'MuonHitDump'; the file has ['Events']"),
    ("no_branch", "the layout maps no branch to 'spacePoint_driftR'"),
    ("wrong_dtype", "field spacePoint_truthLink: branch 'spacePoint_truthLink' has dtype float32 and value 0.5 is not a whole number"),
    ("empty", "is empty (0 entries)"),
])
def test_bad_input_message_and_exit_code(tmp_path, bad_inputs, case, message):
    path = bad_inputs[case]
    r = CliRunner().invoke(main, ["convert", str(bad_inputs["good"]), str(path), "-o", str(tmp_path / "o"), "-j", "1", "-q"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and f"file {path}" in r.output and message in r.output
    assert len(r.output.strip().splitlines()) == 1  # one clear line for the batch log


@pytest.mark.parametrize("executor", [["-j", "2"], ["--scheduler", "local", "-j", "2"]], ids=["pool", "dask"])
def test_a_unit_that_fails_on_a_worker_gives_the_same_one_line_error(tmp_path, bad_inputs, executor):
    """A damaged basket is found while a unit runs, on a worker. On Dask the failed future was cancelled
    with the others before its result was asked for: a FutureCancelledError traceback, not the error."""
    if executor[0] == "--scheduler":
        pytest.importorskip("distributed")
    path = bad_inputs["corrupt_basket"]
    # the console script in a subprocess: what the workers print to this stderr is seen too
    r = subprocess.run([str(BIN / "muon-pipeline"), "convert", str(bad_inputs["good"]), str(path), "-o",
                        str(tmp_path / "o"), "-q", *executor], capture_output=True, text=True, timeout=300)
    output = r.stdout + r.stderr
    assert r.returncode == 1, output
    assert "Traceback" not in output and f"file {path}" in output, output
    assert "cannot read entries 0-120 of branch 'spacePoint_" in output
    assert len(output.strip().splitlines()) == 1, output


def test_skip_bad_files_loses_nothing_else(tmp_path, bad_inputs, random_dump):
    bad = [bad_inputs[k] for k in ("truncated", "corrupt_basket", "not_root", "missing", "no_branch")]
    r = CliRunner().invoke(main, ["convert", str(bad_inputs["good"]), *map(str, bad), "-o", str(tmp_path / "o"),
                                  "-j", "2", "--skip-bad-files"])
    assert r.exit_code == 3, r.output
    m = json.loads((tmp_path / "o/_manifest.json").read_text())
    skipped = {s["path"] for s in m["skipped"]["inputs"]} | {s["path"] for s in m["skipped"]["units"]}
    assert skipped == set(map(str, bad))
    for p in bad:
        assert str(p) in r.output
    # the good file's events are all there, exactly as when converted alone
    r = CliRunner().invoke(main, ["convert", str(bad_inputs["good"]), "-o", str(tmp_path / "alone"), "-q"])
    alone = json.loads((tmp_path / "alone/_manifest.json").read_text())
    assert m["totals"] == alone["totals"] and [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in alone["shards"]]
    cf = m["cutflow"]
    # truncated (120) and no_branch (10) were opened, so their entries count as skipped; corrupt_basket's 120 too
    assert cf["entries_skipped"] == 120 + 120 + 10
    assert cf["entries_in"] == cf["events_out"] + cf["events_cut"] + cf["entries_skipped"]


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (what uproot needs from a remote server)."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        parts = []
        for spec in rng.removeprefix("bytes=").split(","):
            lo, hi = spec.strip().split("-")
            lo, hi = int(lo), min(int(hi) if hi else len(data) - 1, len(data) - 1)
            parts.append((lo, hi))
        lo, hi = parts[0]
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
        self.send_header("Content-Length", str(hi - lo + 1))
        self.end_headers()
        self.wfile.write(data[lo: hi + 1])


def test_remote_http_input_and_fsspec_output(tmp_path, random_dump):
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(random_dump, served / "remote.root")
    handler = lambda *a, **kw: _RangeHandler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/remote.root"
        out_url = f"file://{tmp_path}/remote_out"
        r = CliRunner().invoke(main, ["convert", url, "-o", out_url, "-j", "1", "-q"])
        assert r.exit_code == 0, r.output
    finally:
        server.shutdown()
    r = CliRunner().invoke(main, ["convert", str(served / "remote.root"), "-o", str(tmp_path / "local_out"), "-j", "1", "-q"])
    remote, local = comparable(tmp_path / "remote_out"), comparable(tmp_path / "local_out")
    assert [s["sha256"] for s in remote["shards"]] != []
    remote["totals"].pop("bytes"), local["totals"].pop("bytes")  # source_file strings differ in length
    for key in ("totals", "cutflow", "statistics"):
        assert remote[key] == local[key]
    import pyarrow.parquet as pq

    a = pq.read_table(tmp_path / "remote_out" / remote["shards"][0]["path"]).drop_columns(["source_file"])
    b = pq.read_table(tmp_path / "local_out" / local["shards"][0]["path"]).drop_columns(["source_file"])
    assert a.equals(b)


def test_job_array_task_detects_a_replaced_input(tmp_path):
    files = []
    for i in range(2):
        p = tmp_path / f"f{i}.root"
        write_dump(p, random_events(40, seed=i))
        files.append(str(p))
    out = str(tmp_path / "o")
    args = ["convert", *files, "-o", out, "--task-count", "2", "--shard-events", "40", "-q"]
    assert CliRunner().invoke(main, [*args, "--task-index", "0"]).exit_code == 0
    write_dump(files[1], random_events(40, seed=99))  # replaced between tasks: new ROOT UUID
    r = CliRunner().invoke(main, [*args, "--task-index", "1"])
    assert r.exit_code == 1 and "file changed since the plan was made" in r.output


def test_nothing_is_deleted_through_a_symbolic_link(tmp_path, inputs):
    """Issue 9, case 2: with DS/shards a link, cleaning up deleted part-* and .tmp-* files in its target."""
    ds = tmp_path / "ds"
    r = CliRunner().invoke(main, ["convert", inputs[0], "-o", str(ds), *ARGS])
    assert r.exit_code == 0, r.output
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(ds / "shards"), str(elsewhere))
    (ds / "shards").symlink_to(elsewhere, target_is_directory=True)
    precious = [elsewhere / "part-precious.parquet", elsewhere / ".tmp-precious"]
    for p in precious:
        p.write_bytes(b"someone else's work")
    for args in (["convert", inputs[0], "-o", str(ds), *ARGS],  # resume
                 ["convert", inputs[0], "-o", str(ds), "--reconfigure", "--min-pt", "7", *ARGS],
                 ["finalize", str(ds)]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0 and "symbolic link" in r.output, (args, r.output)
        assert all(p.read_bytes() == b"someone else's work" for p in precious), args


@pytest.mark.parametrize(("stall_after", "stage"), [(4, "cannot open"), ("last", "entries 0-")])
def test_remote_server_that_stops_answering_fails_with_file_and_entries(tmp_path, random_dump, stall_after, stage):
    """Issue 9, case 7: a server that stops answering mid-read hung the conversion forever.
    "last": the server answers every request a complete conversion makes but its last one (a data read)."""
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(random_dump, served / "remote.root")
    answered = {"n": 0, "stall_after": 10**9}
    stop = threading.Event()

    class Stalling(_RangeHandler):
        def do_GET(self):  # noqa: N802 - answers the opening requests, then goes silent
            answered["n"] += 1
            if answered["n"] > answered["stall_after"]:
                stop.wait(30)
                return
            return super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: Stalling(*a, directory=str(served), **kw))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/remote.root"
    if stall_after == "last":  # count the requests of a complete conversion first
        r = CliRunner().invoke(main, ["convert", url, "-o", str(tmp_path / "full"), "-q", "-j", "1"])
        assert r.exit_code == 0, r.output
        stall_after, answered["n"] = answered["n"] - 1, 0
    answered["stall_after"] = stall_after
    try:
        t0 = time.time()
        r = CliRunner().invoke(main, ["convert", url, "-o", str(tmp_path / "out"), "-q", "--remote-timeout", "2"])
        took = time.time() - t0
    finally:
        stop.set()
        server.shutdown()
    assert r.exit_code == 1, r.output
    assert url in r.output and stage in r.output and "no answer from the server within 2 s" in r.output
    assert took < 25


def test_finalize_removes_temporaries_left_by_a_kill(tmp_path, inputs):
    """Issue 9, case 11: a kill between the manifest's temporary write and its rename left it for good."""
    ds = tmp_path / "ds"
    r = CliRunner().invoke(main, ["convert", inputs[0], "-o", str(ds), *ARGS])
    assert r.exit_code == 0, r.output
    # the manifest's temporary, and a unit record's (a worker killed between its write and rename;
    # found by bench/fault_kill.py)
    leftovers = [ds / ".tmp-_manifest.json.12345.deadbeef", ds / "_work" / "units" / ".tmp-0123abcd.json.1.ab"]
    unrelated = ds / "notes.txt"
    unrelated.write_text("mine")
    for args in (["finalize", str(ds)], ["convert", inputs[0], "-o", str(ds), *ARGS]):
        for leftover in leftovers:
            leftover.write_text("{half a manifest")
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        assert not any(p.exists() for p in leftovers) and unrelated.read_text() == "mine"


def test_a_different_input_set_is_refused_not_deleted(tmp_path, inputs):
    """Issue 9, case 1: `convert b -o DS` after `convert a -o DS` deleted a's shards; so did a job-array
    task that listed fewer (or more) inputs than the others."""
    ds = tmp_path / "ds"
    run = CliRunner().invoke
    assert run(main, ["convert", inputs[0], "-o", str(ds), *ARGS]).exit_code == 0
    before = sorted(p.name for p in (ds / "shards").iterdir())
    r = run(main, ["convert", inputs[1], "-o", str(ds), *ARGS])
    assert r.exit_code == 2 and f"+ {inputs[1]}" in r.output and f"- {inputs[0]}" in r.output
    assert sorted(p.name for p in (ds / "shards").iterdir()) == before
    r = run(main, ["convert", inputs[0], inputs[1], "-o", str(ds), *ARGS])  # adding is a change too
    assert r.exit_code == 2 and f"+ {inputs[1]}" in r.output
    # asked for by name: the dataset follows the new list
    r = run(main, ["convert", inputs[0], inputs[1], "-o", str(ds), "--reconfigure", *ARGS])
    assert r.exit_code == 0, r.output
    assert {i["path"] for i in json.loads((ds / "_manifest.json").read_text())["inputs"]} == set(inputs[:2])

    # job array: task 0 plans three inputs, task 1 sees a listing without the last one
    arr = tmp_path / "array"
    r = run(main, ["convert", *inputs, "-o", str(arr), "--task-index", "0", "--task-count", "2", *ARGS])
    assert r.exit_code == 0, r.output
    done = sorted(p.name for p in (arr / "shards").iterdir())
    r = run(main, ["convert", *inputs[:2], "-o", str(arr), "--task-index", "1", "--task-count", "2", *ARGS])
    assert r.exit_code == 2 and f"- {inputs[2]}" in r.output
    r = run(main, ["finalize", str(arr)])
    assert sorted(p.name for p in (arr / "shards").iterdir()) == done  # nothing of task 0 deleted


@pytest.mark.slow
def test_remote_timeout_reaches_a_worker_of_a_running_dask_scheduler(tmp_path, random_dump):
    """--remote-timeout travelled through an environment variable, which a worker of an already-running
    `dask scheduler` never sees: it waited its own default (60 s) on a server that stopped answering.
    The server here answers the planning (in the client) and goes silent once the plan is written, so
    the silence meets the worker."""
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(random_dump, served / "remote.root")
    out = tmp_path / "out"
    stop = threading.Event()

    class SilentAfterPlanning(_RangeHandler):
        def do_GET(self):  # noqa: N802
            if (out / "_work" / "plan.json").exists():
                stop.wait(60)
                return None
            return super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: SilentAfterPlanning(*a, directory=str(served), **kw))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/remote.root"
    try:
        with dask_cluster(1) as addr:
            t0 = time.time()
            r = CliRunner().invoke(main, ["convert", url, "-o", str(out), "--scheduler", addr, "--remote-timeout", "2",
                                          *ARGS])
            took = time.time() - t0
    finally:
        stop.set()
        server.shutdown()
    assert r.exit_code == 1, r.output
    assert url in r.output and "no answer from the server within 2 s" in r.output, r.output
    assert took < 30


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_convert_with_128_plus_n_one_line_and_a_resumable_output(tmp_path, inputs, reference, sig, code):
    """Ctrl-C printed "Aborted!" and exited 1 (the code for bad input), SIGTERM ended in a traceback, and
    `convert -j 2` waited for every queued unit first. Now: one line, exit 128 + N, the pool stopped at once,
    and the same command resumes to the uninterrupted dataset."""
    out = tmp_path / "stopped"
    cmd = [str(BIN / "muon-pipeline"), "convert", *inputs, "-o", str(out), "-j", "2", "--step-size", "5", *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    records = out / "_work" / "units"
    deadline = time.time() + 60
    while time.time() < deadline and not (records.exists() and any(records.iterdir())):
        time.sleep(0.01)
    t0 = time.time()
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=60)
    took = time.time() - t0
    if proc.returncode == 0:
        pytest.skip("the conversion ended before the signal arrived")
    assert proc.returncode == code, text
    assert f"stopped by {sig.name}" in text and "run the same command again" in text, text
    assert "Traceback" not in text and "Aborted!" not in text, text
    assert took < 10, took
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert comparable(out) == comparable(reference)


def test_sigterm_to_the_process_group_of_convert_j2_prints_one_line(tmp_path, inputs):
    """A batch system's SIGTERM reaches the pool workers too: they printed four tracebacks of their own."""
    out = tmp_path / "stopped"
    cmd = [str(BIN / "muon-pipeline"), "convert", *inputs, "-o", str(out), "-j", "2", "--step-size", "5", *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    records = out / "_work" / "units"
    deadline = time.time() + 60
    while time.time() < deadline and not (records.exists() and any(records.iterdir())):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the conversion ended before the signal arrived")
    assert proc.returncode == 143 and "Traceback" not in text and text.count("\n") <= 3, text
