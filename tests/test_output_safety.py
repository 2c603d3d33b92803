"""Issue 9 follow-ups found by a break-it review: ways `convert` could still delete or corrupt finished
data. Each test makes its own inputs and asserts the safe outcome: a refusal that names the problem
before any work, and nothing deleted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from rawdump import random_events, write_dump
from unlockable import WAYS, make_unlockable

from pipeline.cli import main

ARGS = ["--shard-events", "60", "-q", "-j", "1"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def two(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / "in" / f"in{i}.root"
        p.parent.mkdir(exist_ok=True)
        write_dump(p, random_events(120, seed=40 + i))
        paths.append(p)
    return paths


def _files(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def test_convert_refuses_a_folder_that_is_not_a_convert_output(tmp_path, two):
    """`convert b -o M` where M is a migrate output (no _work/) deleted M's shards and replaced its manifest."""
    v1, m = tmp_path / "v1", tmp_path / "m"
    assert run("convert", two[0], "-o", v1, "--schema-version", "1", *ARGS).exit_code == 0
    assert run("migrate", v1, "--to-version", "2", "-o", m).exit_code == 0
    before = {f: (m / f).read_bytes() for f in _files(m)}
    r = run("convert", two[1], "-o", m, *ARGS)
    assert r.exit_code == 2 and "no convert plan" in r.output and "_manifest.json" in r.output
    assert {f: (m / f).read_bytes() for f in _files(m)} == before
    mine = tmp_path / "mine"
    (mine / "shards").mkdir(parents=True)
    (mine / "shards" / "part-mine.parquet").write_bytes(b"my own work")
    r = run("convert", two[1], "-o", mine, *ARGS)
    assert r.exit_code == 2 and "part-mine.parquet" in r.output
    assert (mine / "shards" / "part-mine.parquet").read_bytes() == b"my own work"
    (tmp_path / "afile").write_text("x")
    r = run("convert", two[1], "-o", tmp_path / "afile", *ARGS)
    assert r.exit_code == 2 and "is a file" in r.output
    r = run("convert", two[1], "-o", "", *ARGS)
    assert r.exit_code == 2 and "--output must name a folder" in r.output


def test_the_same_file_under_two_spellings_is_refused(tmp_path, two, monkeypatch):
    monkeypatch.chdir(two[0].parent)
    os.symlink(two[0], tmp_path / "link.root")
    for spellings in (["in0.root", "./in0.root"], ["in0.root", str(tmp_path / "link.root")]):
        r = run("convert", *spellings, "-o", tmp_path / "d", *ARGS)
        assert r.exit_code == 2 and "are the same file" in r.output, r.output
        assert not (tmp_path / "d").exists()


def test_a_resume_may_spell_the_same_inputs_differently(tmp_path, two, monkeypatch):
    """Resuming with `./in/` after `in/` (or an absolute path, or a link to the folder) was refused as a
    different input set. Now each local input takes the spelling the plan recorded when both name the
    same file, so the resumed dataset is byte for byte the first one (source_file included)."""
    monkeypatch.chdir(tmp_path)
    os.symlink(tmp_path / "in", tmp_path / "linked")
    ds = tmp_path / "ds"
    first = run("convert", "in/in0.root", "in/in1.root", "-o", "ds", "--shard-events", "30", "-q", "-j", "1")
    assert first.exit_code == 0, first.output
    shards = {f: (ds / f).read_bytes() for f in _files(ds) if f.startswith("shards/")}
    manifest = json.loads((ds / "_manifest.json").read_text())
    victim = sorted(f for f in shards if f.endswith(".parquet"))[-1]
    for spelling in (["./in/in0.root", "./in//in1.root"], [str(tmp_path / "in" / "in0.root"), "in/in1.root"],
                     ["linked/in0.root", "linked/in1.root"], ["in"]):
        (ds / victim).unlink()  # one unit to redo: the resume must write it as the first run did
        r = run("convert", *spelling, "-o", "ds", "--shard-events", "30", "-j", "1")
        assert r.exit_code == 0 and "already done" in r.output, (spelling, r.output)
        assert {f: (ds / f).read_bytes() for f in _files(ds) if f.startswith("shards/")} == shards, spelling
        again = json.loads((ds / "_manifest.json").read_text())
        assert [i["path"] for i in again["inputs"]] == ["in/in0.root", "in/in1.root"]
        assert again["shards"] == manifest["shards"]
    (ds / victim).unlink()  # job-array tasks too (they reuse the plan when the inputs are the same)
    for i in range(2):
        r = run("convert", "./in/in0.root", "./in/in1.root", "-o", "ds", "--shard-events", "30", "-q", "-j", "1",
                "--task-index", i, "--task-count", 2)
        assert r.exit_code == 0, r.output
    assert run("finalize", "ds").exit_code == 0
    assert {f: (ds / f).read_bytes() for f in _files(ds) if f.startswith("shards/")} == shards
    r = run("convert", "./in/in0.root", "-o", "ds", "--shard-events", "30", "-q")  # still a different set
    assert r.exit_code == 2 and "- in/in1.root" in r.output, r.output
    assert run("validate", "ds").exit_code == 0


def test_a_replaced_input_is_refused_unless_reconfigure(tmp_path, two):
    """A plain run re-converted a file replaced under the same path and deleted its old shards."""
    ds = tmp_path / "ds"
    assert run("convert", *two, "-o", ds, *ARGS).exit_code == 0
    before = _files(ds / "shards")
    write_dump(two[1], random_events(120, seed=99))  # same path, new file (new ROOT UUID)
    r = run("convert", *two, "-o", ds, *ARGS)
    assert r.exit_code == 2 and "replaced since the dataset was planned" in r.output and str(two[1]) in r.output
    assert _files(ds / "shards") == before
    r = run("convert", *two, "-o", ds, "--reconfigure", *ARGS)
    assert r.exit_code == 0, r.output
    assert run("validate", ds).exit_code == 0


def test_an_input_skipped_now_keeps_its_finished_shards(tmp_path, two):
    """With --skip-bad-files, a briefly unreachable input lost its finished shards."""
    ds = tmp_path / "ds"
    assert run("convert", *two, "-o", ds, "--skip-bad-files", *ARGS).exit_code == 0
    m0 = json.loads((ds / "_manifest.json").read_text())
    shards = {s["path"]: (ds / s["path"]).read_bytes() for s in m0["shards"]}
    away = tmp_path / "away.root"
    shutil.move(two[1], away)
    r = run("convert", *two, "-o", ds, "--skip-bad-files", *ARGS)
    assert r.exit_code == 0, r.output  # nothing is skipped: its finished units are reused
    m1 = json.loads((ds / "_manifest.json").read_text())
    assert {s["path"]: (ds / s["path"]).read_bytes() for s in m1["shards"]} == shards
    assert m1["cutflow"] == m0["cutflow"]
    shutil.move(away, two[1])
    r = run("convert", *two, "-o", ds, "--skip-bad-files", *ARGS)
    assert r.exit_code == 0 and json.loads((ds / "_manifest.json").read_text())["shards"] == m0["shards"]


def test_a_linked_shards_folder_is_refused_before_any_work(tmp_path, two):
    """With a symlinked shards/, all the work was done into the link's target, then refused at the end;
    a refused --reconfigure had already rewritten the plan and removed the manifest."""
    target = tmp_path / "target"
    target.mkdir()
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "shards").symlink_to(target, target_is_directory=True)
    r = run("convert", two[0], "-o", ds, *ARGS)
    assert r.exit_code == 2 and "symbolic link" in r.output
    assert list(target.iterdir()) == [] and not (ds / "_work").exists()
    real = tmp_path / "real"
    assert run("convert", *two, "-o", real, *ARGS).exit_code == 0
    plan = (real / "_work" / "plan.json").read_bytes()
    manifest = (real / "_manifest.json").read_bytes()
    shutil.move(real / "shards", tmp_path / "moved")
    (real / "shards").symlink_to(tmp_path / "moved", target_is_directory=True)
    r = run("convert", two[0], "-o", real, "--reconfigure", *ARGS)
    assert r.exit_code == 2 and "symbolic link" in r.output
    assert (real / "_work" / "plan.json").read_bytes() == plan and (real / "_manifest.json").read_bytes() == manifest


@pytest.mark.parametrize(("option", "message"), [
    (["--technologies", "99999999999999999999"], "outside -1..255"),
    (["--technologies", "300"], "outside -1..255"),
    (["--technologies", "all,MDT"], "'all' stands alone"),
    (["--step-size", "99999999999999999999"], "too large"),
    (["--shard-bytes", "10000 TB"], "too large"),
    (["--compression", "snappy:3"], "takes no level"),
    (["--compression", "zstd:99"], "levels are 1..22"),
    (["--scheduler", "garbage"], "scheduler address"),
    (["--min-pt", "nan"], "finite"),
    (["--max-abs-eta", "inf"], "finite"),
    (["-j", "0"], "--workers"),
    (["--schema-version", "0"], "unknown schema version 0"),
])
def test_bad_options_are_usage_errors_before_any_work(tmp_path, two, option, message):
    """Each of these ended in a traceback (exit 1), some after the plan or shards were written, or wrote
    a manifest holding NaN (not JSON)."""
    out = tmp_path / "out"
    r = run("convert", two[0], "-o", out, *ARGS, *option)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path, two):
    """Two identical converts at once: the second died with a traceback on a temporary the first's finalize
    had removed. Now a writer holds a lock on the output folder: exclusive for convert and finalize,
    shared for job-array tasks (they run side by side, never beside a finalize)."""
    import fcntl

    ds = tmp_path / "ds"
    assert run("convert", two[0], "-o", ds, *ARGS).exit_code == 0
    before = (ds / "_manifest.json").read_bytes()
    fd = os.open(ds, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running convert holds it
        for args in (["convert", two[0], "-o", ds, *ARGS], ["finalize", ds],
                     ["convert", two[0], "-o", ds, "--task-index", "0", "--task-count", "2", *ARGS]):
            r = run(*args)
            assert r.exit_code == 2 and "another muon-pipeline command is writing" in r.output, (args, r.output)
        assert (ds / "_manifest.json").read_bytes() == before
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as a running job-array task holds it
        r = run("convert", two[0], "-o", ds, "--task-index", "1", "--task-count", "2", *ARGS)
        assert r.exit_code == 0, r.output  # another task runs beside it
        assert run("finalize", ds).exit_code == 2  # but no finalize
    finally:
        os.close(fd)
    assert run("finalize", ds).exit_code == 0


def test_migrate_takes_the_same_locks(tmp_path, two):
    """`migrate` took no lock: two migrations into one folder raced, and a convert could rewrite the source
    while it was read. Now it holds the output exclusively and the source as every reader does: refused
    while a convert, finalize or migrate writes the source; beside a job-array task (shared) or another
    reader of it (a task replacing the plan is refused by the reader's lock instead)."""
    import fcntl

    src = tmp_path / "v1"
    assert run("convert", two[0], "-o", src, "--schema-version", "1", *ARGS).exit_code == 0
    out = tmp_path / "v2"
    out.mkdir()
    for folder, mode, message in ((out, fcntl.LOCK_EX, "another muon-pipeline command is writing"),
                                  (out, fcntl.LOCK_SH, "another muon-pipeline command is writing"),
                                  (src, fcntl.LOCK_EX, "is being written by")):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)  # a running convert, job-array task or migrate holds it
            r = run("migrate", src, "--to-version", "2", "-o", out)
            assert r.exit_code == 2 and message in r.output, (folder, r.output)
            assert not list(out.iterdir())  # nothing written
        finally:
            os.close(fd)
    assert run("migrate", src, "--to-version", "2", "-o", out).exit_code == 0
    assert run("validate", out).exit_code == 0
    assert json.loads((out / "_manifest.json").read_text())["schema"]["version"] == 2


@pytest.mark.parametrize("how", WAYS)
def test_writers_run_unlocked_with_a_warning_where_no_lock_can_be_taken(tmp_path, two, monkeypatch, how):
    """Lustre mounted `noflock` answers flock with ENOSYS, and a source folder one may enter but not list
    cannot be opened: convert, finalize and migrate stopped with a traceback there (migrate of such a
    source had worked before it took a lock). Now they run as before locks existed, with one warning."""
    make_unlockable(monkeypatch, how)
    src = tmp_path / "v1"
    for args in (["convert", two[0], "-o", src, "--schema-version", "1", *ARGS], ["finalize", src],
                 ["migrate", src, "--to-version", "2", "-o", tmp_path / "v2"]):
        r = run(*args)
        assert r.exit_code == 0 and "Traceback" not in r.output, (args, r.output)
        assert f"warning: cannot lock {src}" in r.output, (args, r.output)
    monkeypatch.undo()
    assert run("validate", tmp_path / "v2").exit_code == 0


def test_a_folder_that_cannot_be_listed_is_a_one_line_error(tmp_path, two, monkeypatch):
    """An output one may write to but not list (mode 733, without root's override) ended in a
    PermissionError traceback from the listing; any command's PermissionError is now one line, exit 1."""
    import errno

    out = tmp_path / "o733"
    out.mkdir()
    real_scandir, real_listdir = os.scandir, os.listdir

    def guard(real):
        def listing(path="."):
            if str(os.fspath(path)).startswith(str(out)):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real(path)
        return listing

    monkeypatch.setattr(os, "scandir", guard(real_scandir))
    monkeypatch.setattr(os, "listdir", guard(real_listdir))
    (out / "x").write_text("someone's file")  # not empty: convert must list it before writing
    for args in (["convert", two[0], "-o", out, *ARGS], ["finalize", out]):
        r = run(*args)
        assert r.exit_code in (1, 2) and "Traceback" not in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, (args, r.output)
    r = run("convert", two[0], "-o", out, *ARGS)
    assert r.exit_code == 1 and f"Error: {out}" in r.output and "permission denied" in r.output, r.output


def test_validate_accepts_what_skip_bad_files_writes(tmp_path):
    """validate rejected every dataset with a skipped unit (it read a record shape finalize never writes)
    and every dataset whose units are cut by bytes (it expected units of exactly shard_events entries)."""
    import uproot

    path = tmp_path / "d.root"
    write_dump(path, random_events(400, seed=5), compression=uproot.ZLIB(1), basket_entries=50)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 4000] = bytes(4000)  # zeros over a few baskets in the middle of the file
    path.write_bytes(bytes(data))
    ds = tmp_path / "ds"
    r = run("convert", path, "-o", ds, "--shard-events", "100", "--skip-bad-files", "-q", "-j", "1")
    assert r.exit_code == 3, r.output
    m = json.loads((ds / "_manifest.json").read_text())
    assert m["skipped"]["units"] and m["shards"]
    r = run("validate", ds)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(("code", "words"), [(30, "read-only"), (28, "space")])
def test_a_read_only_or_full_output_is_one_line_for_every_writer(tmp_path, monkeypatch, random_dump, code, words):
    """EROFS / ENOSPC from the output's file system (convert -o, migrate -o, train writing config.yaml)
    ended in a 36-line traceback; a missing permission already gave one line."""
    import errno as _errno
    import os as _os

    from click.testing import CliRunner

    from pipeline.cli import main

    src = tmp_path / "src"
    assert CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(src), "-q", "--schema-version", "1"]).exit_code == 0
    src2 = tmp_path / "src2"
    assert CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(src2), "-q"]).exit_code == 0
    real_open = _os.open

    def failing_open(path, flags, *a, **kw):
        if (flags & (_os.O_WRONLY | _os.O_RDWR)) and str(path).startswith(str(tmp_path / "out")):
            raise OSError(code, _os.strerror(code), str(path))
        return real_open(path, flags, *a, **kw)

    import builtins

    real_builtin_open = builtins.open

    def failing_builtin_open(file, mode="r", *a, **kw):
        if any(m in mode for m in "wax+") and str(file).startswith(str(tmp_path / "out")):
            raise OSError(code, _os.strerror(code), str(file))
        return real_builtin_open(file, mode, *a, **kw)

    real_mkdir = _os.mkdir

    def failing_mkdir(path, *a, **kw):
        if str(path).startswith(str(tmp_path / "out")):
            raise OSError(code, _os.strerror(code), str(path))
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(_os, "open", failing_open)
    monkeypatch.setattr(_os, "mkdir", failing_mkdir)
    monkeypatch.setattr(builtins, "open", failing_builtin_open)
    assert _errno.errorcode[code] in ("EROFS", "ENOSPC")
    for args in (["convert", str(random_dump), "-o", str(tmp_path / "out" / "c"), "-q"],
                 ["migrate", str(src), "--to-version", "2", "-o", str(tmp_path / "out" / "m")],
                 ["train", "--config", "inverse_pt", "--data", str(src2), "-o", str(tmp_path / "out" / "t")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and words in r.output.lower() and "Traceback" not in r.output, (args, r.output)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and r.output.strip().endswith(errors[0]), r.output  # one line, the last


def _snapshot(d) -> dict:
    """Every file below ``d`` with its bytes, and every folder (a failed start must leave both as they were)."""
    if not d.exists():
        return {}
    return {p.relative_to(d).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


@pytest.fixture
def no_wait():
    """Dask's connect timeout at 1 s (30 s by default), for the unreachable scheduler."""
    pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        yield


@pytest.mark.parametrize("how", ["unreachable scheduler", "missing extra", "slurm without sbatch", "bad input"])
@pytest.mark.parametrize("state", ["new", "empty", "finished"])
def test_a_failed_start_leaves_the_folder_as_it_was(tmp_path, two, monkeypatch, no_wait, how, state):
    """`convert raw.root -o b2 --scheduler tcp://127.0.0.1:9` (nothing there) left b2/_work/plan.json, and the
    corrected `convert raw.root -o b2 --min-pt 10` was refused as "produced with a different configuration"
    although nothing was produced; the same with a missing extra or SLURM without sbatch. A start that fails
    now writes nothing: a new folder is not made, an empty one stays empty, a finished dataset (asked to
    --reconfigure) keeps every byte."""
    ds = tmp_path / "b2"
    if state == "empty":
        ds.mkdir()
    elif state == "finished":
        assert run("convert", two[0], "-o", ds, *ARGS).exit_code == 0
    before = _snapshot(ds)
    inputs, extra = [two[0]], ["--reconfigure", "--min-pt", "10"] if state == "finished" else []
    if how == "unreachable scheduler":
        extra += ["--scheduler", "tcp://127.0.0.1:9"]
    elif how == "missing extra":
        from pipeline import extras

        monkeypatch.setattr(extras, "missing", lambda modules: list(modules))
        r = run("convert", *inputs, "-o", ds, *extra, "--scheduler", "slurm", *ARGS)  # [grid] missing
        assert r.exit_code == 2 and "dask-jobqueue" in r.output and _snapshot(ds) == before, r.output
        extra += ["--scheduler", "local"]  # [dask] missing
    elif how == "slurm without sbatch":
        pytest.importorskip("dask_jobqueue")
        monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
        extra += ["--scheduler", "slurm"]
    else:
        (tmp_path / "bad.root").write_text("not ROOT")
        inputs.append(tmp_path / "bad.root")
    r = run("convert", *inputs, "-o", ds, *extra, *ARGS)
    assert r.exit_code in (1, 2) and "Traceback" not in r.output, r.output
    assert _snapshot(ds) == before
    monkeypatch.undo()  # the corrected command
    r = run("convert", two[0], "-o", ds, "--min-pt", "10", *(["--reconfigure"] if state == "finished" else []), *ARGS)
    assert r.exit_code == 0, r.output


def _corrupt(path, seed: int = 3):
    """A dump whose spacePoint baskets are damaged: planning reads it, its unit fails when it runs."""
    import uproot

    write_dump(path, random_events(120, seed=seed), compression=uproot.ZLIB(4))
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("task", [False, True], ids=["convert", "job-array task"])
def test_a_plan_nothing_was_produced_from_blocks_no_other_command(tmp_path, two, task):
    """A run that wrote its plan and then failed before any unit finished (its one input damaged where
    planning does not read) made the corrected command, with other inputs or options, be refused as "planned
    for other inputs" or "produced with a different configuration", although nothing was produced. Such a
    plan now blocks nothing; a job-array task still keeps to it (the other tasks work from it), and a plan
    something was produced from is binding as before."""
    bad = _corrupt(tmp_path / "bad.root")
    ds = tmp_path / "ds"
    array = ["--task-index", "0", "--task-count", "2"] if task else []
    r = run("convert", bad, "-o", ds, *array, *ARGS)
    assert r.exit_code == 1 and "cannot read entries" in r.output, r.output
    assert (ds / "_work" / "plan.json").exists() and not list(ds.glob("shards/*"))
    r = run("convert", two[0], "-o", ds, "--min-pt", "7", *array, *ARGS)
    assert r.exit_code == (2 if task else 0), r.output
    if task:
        assert "different configuration" in r.output
        return
    r = run("convert", two[1], "-o", ds, *ARGS)  # now something was produced: binding
    assert r.exit_code == 2 and "produced with a different configuration" in r.output, r.output


def _read_only(monkeypatch, root) -> None:
    """Every write below ``root`` fails with EROFS, as on a read-only mount (tests run as root, which
    ignores file modes)."""
    import builtins
    import errno

    def guard(real, writes=lambda *a: True):
        def call(path, *a, **kw):
            if str(path).startswith(str(root)) and writes(*a):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real(path, *a, **kw)
        return call

    monkeypatch.setattr(os, "open", guard(os.open, lambda flags, *a: bool(flags & (os.O_WRONLY | os.O_RDWR))))
    monkeypatch.setattr(builtins, "open", guard(builtins.open, lambda mode="r", *a: any(m in mode for m in "wax+")))
    for name in ("mkdir", "remove", "unlink", "rmdir", "replace", "rename"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))


@pytest.mark.parametrize("how", ["mount", "patched"])
def test_a_finished_dataset_re_run_on_a_read_only_copy_is_already_complete(tmp_path, two, monkeypatch, how):
    """Re-running a finished convert over a read-only published dataset failed on rewriting the manifest's
    timing block. Nothing is left to do, so nothing is written: exit 0, one line saying so, every byte as it
    was; `finalize` likewise. ``mount``: a real read-only bind mount (needs the right to mount)."""
    src = tmp_path / "ds"
    assert run("convert", *two, "-o", src, *ARGS).exit_code == 0
    pub = src
    if how == "mount":
        pub = tmp_path / "pub"
        pub.mkdir()
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(pub)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr.decode().strip()}")
        assert subprocess.run(["touch", str(pub / "x")], capture_output=True).returncode != 0, "mount is not read-only"
    else:
        _read_only(monkeypatch, src)
    try:
        before = _snapshot(pub)
        r = run("convert", *two, "-o", pub, *ARGS)
        assert r.exit_code == 0 and "already complete" in r.output, r.output
        r = run("finalize", pub)
        assert r.exit_code == 0 and "already complete" in r.output, r.output
        assert _snapshot(pub) == before
        r = run("convert", *two, "-o", pub, "--min-pt", "9", *ARGS)  # a real change still needs a writable folder
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    finally:
        if how == "mount":
            subprocess.run(["umount", str(pub)], check=True)
