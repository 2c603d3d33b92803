"""Readers hold a shared lock on the dataset they read; a writer that would delete is refused meanwhile.

`convert --reconfigure` deleted the shards a running `train` was reading (the streaming trainer died with a
FileNotFoundError traceback, the resident one recorded a dataset that no longer existed): writers locked
the folder, readers did not. Each test makes its own dump and dataset.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rawdump import random_events, write_dump
from unlockable import WAYS, make_unlockable

import pipeline
from pipeline import locks
from pipeline.cli import main
from pipeline.errors import ConfigError

ARGS = ["--shard-events", "60", "-q", "-j", "1"]
REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the independent check that nothing changed)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(tmp_path) -> Path:
    path = tmp_path / "in" / "raw.root"
    path.parent.mkdir()
    write_dump(path, random_events(150, seed=23))
    return path


@pytest.fixture
def ds(tmp_path, raw) -> Path:
    out = tmp_path / "ds"
    r = run("convert", raw, "-o", out, *ARGS)
    assert r.exit_code == 0, r.output
    return out


class Reader:
    """Another process holding the readers' lock through the public mechanism, as `train` holds it."""

    def __init__(self, folder: Path) -> None:
        code = ("import sys, pipeline\n"
                f"with pipeline.reading({str(folder)!r}, 'train'):\n"
                "    print('held', flush=True)\n"
                "    sys.stdin.read()\n")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        assert self.proc.stdout.readline().strip() == "held"

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_a_writer_that_deletes_is_refused_while_another_process_reads(tmp_path, raw, ds, monkeypatch):
    monkeypatch.setattr(locks, "PLAN_WAIT_S", 0.3)  # a job-array task's wait for another task's instant
    before = digest(ds)
    with Reader(ds) as reader:
        for args in (["convert", raw, "-o", ds, "--reconfigure", "--shard-events", "40", "-q", "-j", "1"],
                     ["finalize", ds],
                     ["convert", raw, "-o", ds, "--reconfigure", "--shard-events", "40", "-q", "-j", "1",
                      "--task-index", "0", "--task-count", "2"]):
            r = run(*args)
            line = one_line(r.output)
            assert r.exit_code == 2 and f"{ds} is being read by pid {reader.proc.pid} (" in line, (args, line)
            assert "python -c" in line  # who: the holder's command line
            assert digest(ds) == before, args
        # beside the reader: other readers, and a job-array task that resumes the same plan
        assert run("validate", ds).exit_code == 0
        assert run("inspect", ds).exit_code == 0
        r = run("migrate", ds, "--to-version", "2", "-o", tmp_path / "m")
        assert "being" not in r.output and "Traceback" not in r.output
        assert pipeline.read_dataset(str(ds)).num_rows == sum(
            e["rows"] for e in json.loads((ds / "_manifest.json").read_text())["shards"])
        r = run("convert", raw, "-o", ds, "--task-index", "1", "--task-count", "2", *ARGS)
        assert r.exit_code == 0, r.output
        assert digest(ds) == before
    r = run("convert", raw, "-o", ds, "--reconfigure", "--shard-events", "40", "-q", "-j", "1")
    assert r.exit_code == 0, r.output  # the reader has gone
    assert digest(ds) != before


def test_two_readers_in_two_processes_read_at_once(ds):
    with Reader(ds), Reader(ds):
        r = run("validate", ds)
        assert r.exit_code == 0, r.output


def test_every_reader_is_refused_while_a_writer_holds_the_folder(tmp_path, ds):
    fd = os.open(ds, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running convert, finalize or migrate holds it
        for args, what in ((["validate", ds], "validate"), (["validate", ds, "--source", "1"], "validate"),
                           (["inspect", ds], "inspect"),
                           (["migrate", ds, "--to-version", "2", "-o", tmp_path / "m"], "migrate")):
            r = run(*args)
            line = one_line(r.output)
            assert r.exit_code == 2 and f"{ds} is being written by" in line and f"this {what} reads" in line, line
        with pytest.raises(ConfigError, match="is being written by"):
            pipeline.read_dataset(str(ds))
        assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", WAYS)
def test_a_reader_runs_unlocked_with_a_warning_where_no_lock_can_be_taken(ds, monkeypatch, how):
    make_unlockable(monkeypatch, how)
    for args in (["validate", ds], ["inspect", ds]):
        r = run(*args)
        assert r.exit_code == 0 and "Traceback" not in r.output, (args, r.output)
        assert f"warning: cannot lock {ds}" in r.output, (args, r.output)


def test_a_read_only_dataset_is_locked_and_read(ds):
    """No lock file is written: a dataset on a read-only folder is read, locked, without a warning."""
    modes = {p: p.stat().st_mode for p in (ds, ds / "shards")}
    try:
        for p in modes:
            p.chmod(0o555)
        with Reader(ds):
            r = run("validate", ds)
            assert r.exit_code == 0 and "warning" not in r.output, r.output
            fd = os.open(ds, os.O_RDONLY | os.O_DIRECTORY)
            try:  # the reader's shared lock is there: an exclusive one cannot be had
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


TINY = """
fields: [truthMuon_eta, truthMuon_phi, truthMuon_pt, truthMuon_q]
inverse_fields: [truthMuon_pt]
dim: 8
heads: 2
encoder_layers: 1
data: {{batch_size: 16, num_workers: {workers}, shuffle_buffer: 64, train_fraction: 0.6, val_fraction: 0.4,
        resident: "{resident}"}}
trainer: {{max_steps: 2, lr: 3.0e-3, warmup_steps: 1}}
"""


@pytest.mark.parametrize(("resident", "workers"), [("off", 2), ("on", 0)])
def test_train_and_evaluate_hold_the_lock_while_they_read(tmp_path, raw, ds, monkeypatch, resident, workers):
    """A `convert --reconfigure` tried from inside the fit (when Lightning asks for the train loader) and
    inside evaluate (between the predictions and the baseline's read of the shards) is refused: the
    streaming loader (with DataLoader workers) and the device-resident one."""
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from pipeline.train import datamodule, evaluate

    before = digest(ds)
    tried: list[str] = []

    def try_to_delete() -> None:
        r = run("convert", raw, "-o", ds, "--reconfigure", "--shard-events", "40", "-q", "-j", "1")
        tried.append(one_line(r.output) if r.exit_code == 2 else f"ran: {r.output}")

    real_loader = datamodule.RegressionDataModule.train_dataloader

    def train_dataloader(self):
        try_to_delete()
        return real_loader(self)

    monkeypatch.setattr(datamodule.RegressionDataModule, "train_dataloader", train_dataloader)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(resident=resident, workers=workers))
    r = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(ds), "--output", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["data_path"] == ("resident" if resident == "on" else "streaming")
    real_baseline = evaluate.add_baseline

    def add_baseline(columns, info):
        try_to_delete()
        return real_baseline(columns, info)

    monkeypatch.setattr(evaluate, "add_baseline", add_baseline)
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--data", str(ds), "--no-plots",
                                  "--split", "val"])
    assert r.exit_code == 0, r.output
    assert len(tried) == 2 and all(f"{ds} is being read" in t for t in tried), tried
    assert digest(ds) == before
