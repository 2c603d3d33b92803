"""Training that survives the batch system: a run stopped (SIGTERM, kill -9) and resumed ends where an
uninterrupted run ends, batch for batch and bit for bit; checkpoints are the product's, not Lightning's.

The reference for every case is the same run without interruption, on the same data, seed and thread count.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

import pipeline.train.fit as fit  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.train.checkpoints import read_meta  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402
from pipeline.train.data.epoch import epoch_seed, resume_plan, worker_skips  # noqa: E402

BIN = Path(sys.executable).parent
COUNTER = fit.trained_events_counter


def tiny(batch_size: int = 32, num_workers: int = 0, resident: str = "off", **trainer) -> dict:
    t = {"max_epochs": 3, "lr": 3.0e-3, "warmup_steps": 2, "patience": 0, "threads": 1, "checkpoint_every": 0,
         "progress_every": 0, **trainer}
    return {"fields": ["truthMuon_eta", "truthMuon_phi", "truthMuon_pt", "truthMuon_q"],
            "inverse_fields": ["truthMuon_pt"], "dim": 16, "heads": 2, "encoder_layers": 1,
            "data": {"batch_size": batch_size, "num_workers": num_workers, "shuffle_buffer": 64,
                     "resident": resident}, "trainer": t}


class Recorder(Callback):
    """The (epoch, rows) of every training batch, and a SIGTERM sent to this process after step ``stop_at``."""

    def __init__(self, log: list, stop_at: int | None = None) -> None:
        self.log, self.stop_at = log, stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.log.append((trainer.current_epoch, [int(r) for r in batch["row"]]))  # each batch starts one step
        if self.stop_at is not None and trainer.global_step == self.stop_at - 1:  # arrives during step stop_at
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal: the handler in place decides what happens


def run(monkeypatch, cfg: dict | None, data, out: Path, log: list, stop_at: int | None = None,
        resume: bool = False, **overrides):
    """fit.train in this process, recording batches; returns (summary or the exception, weights)."""
    def counter():
        c = COUNTER()
        rec = Recorder(log, stop_at)
        c.on_train_batch_start = rec.on_train_batch_start
        return c

    monkeypatch.setattr(fit, "trained_events_counter", counter)
    result = None
    try:
        result = fit.train(config_from_dict(cfg) if cfg else None, data, out, resume=resume,
                           overrides={f"trainer.{k}": v for k, v in overrides.items()}, quiet=True)
    except Exception as err:  # noqa: BLE001 - the stop is an exception with an exit code; returned for checks
        result = err
    last = out / "checkpoints" / "last.ckpt"
    weights = torch.load(last, map_location="cpu", weights_only=True)["state_dict"] if last.exists() else None
    return result, weights


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def by_epoch(log: list) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for epoch, rows in log:
        out.setdefault(epoch, []).extend(rows)
    return out


# ------------------------------------------------------------------------------------------------ units
def test_worker_skips_follows_the_round_robin_of_a_dataloader():
    """Against a slow reference: the first k batches of a round-robin over workers with n_j batches each."""
    for counts in ([3, 3], [4, 2, 3], [1, 5], [0, 2, 2], [5]):
        order = []  # worker of each batch as a DataLoader yields them
        for rnd in range(max(counts)):
            order += [j for j, n in enumerate(counts) if n > rnd]
        for k in range(sum(counts) + 1):
            expected = [order[:k].count(j) for j in range(len(counts))]
            assert worker_skips(counts, k) == expected, (counts, k)
            assert resume_plan(counts, k) == (expected, order[k] if k < len(order) else 0), (counts, k)
    with pytest.raises(ValueError):
        worker_skips([1, 1], 3)


def test_epoch_seed_is_a_function_of_seed_epoch_rank_worker_only():
    seeds = {epoch_seed(s, e, r, w) for s in (1, 2) for e in (0, 1) for r in (0, 1) for w in (0, 1)}
    assert len(seeds) == 16 and epoch_seed(1, 0, 0, 0) == epoch_seed(1, 0, 0, 0) < 2**62


# ------------------------------------------------------------------------- resume = uninterrupted
@pytest.mark.slow
@pytest.mark.parametrize(("resident", "workers", "where"), [("off", 0, "mid"), ("off", 2, "mid"), ("on", 0, "mid"),
                                                          ("off", 2, "end"), ("on", 0, "end")])
def test_sigterm_then_resume_equals_the_uninterrupted_run(monkeypatch, tmp_path, converted_random, resident, workers,
                                                          where):
    """Case 2 (a mid-epoch resume repeated 128 events and skipped 103) and case 3 (SIGTERM exited 0 with no
    checkpoint): stopped by SIGTERM and resumed, the run trains the same events in the same order and ends
    with bit-identical weights, streaming (0 and 2 workers) and device-resident; stopped inside an epoch,
    and on an epoch's last batch (the stop then waits for that epoch's validation)."""
    cfg = tiny(num_workers=workers, resident=resident, patience=5)
    ref_log: list = []
    ref, ref_w = run(monkeypatch, cfg, converted_random, tmp_path / "ref", ref_log)
    assert isinstance(ref, dict), ref
    steps, per_epoch = ref["steps"], len(ref_log) // 3
    stop_at = per_epoch + per_epoch // 2 + 1 if where == "mid" else per_epoch
    log: list = []
    stopped, _ = run(monkeypatch, cfg, converted_random, tmp_path / "run", log, stop_at=stop_at)
    assert getattr(stopped, "exit_code", None) == 143, stopped
    assert f"stopped by SIGTERM at step {stop_at}" in str(stopped) and "--resume" in str(stopped)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["steps"] == stop_at
    assert read_meta(tmp_path / "run" / "checkpoints" / "last.ckpt")["step"] == stop_at
    resumed, w = run(monkeypatch, None, converted_random, tmp_path / "run", log, resume=True)
    assert isinstance(resumed, dict) and resumed["steps"] == steps
    assert by_epoch(log) == by_epoch(ref_log)  # every epoch: the same events, in the same order, once
    assert same_weights(w, ref_w)
    assert resumed["best_val_loss"] == ref["best_val_loss"]


@pytest.mark.slow
def test_kill_9_after_a_periodic_checkpoint_then_resume_equals_the_uninterrupted_run(tmp_path, converted_random):
    """kill -9 (no handler runs) after the periodic checkpoint of step 5: the resumed run redoes what came
    after it and ends with the uninterrupted run's weights."""
    cfg = tmp_path / "tiny.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(tiny(checkpoint_every=5)))
    args = ["train", "--config", str(cfg), "--data", str(converted_random)]
    ref = subprocess.run([str(BIN / "muon-pipeline"), *args, "--output", str(tmp_path / "ref")], capture_output=True,
                         text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "muon-pipeline"), *args, "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not ((m := read_meta(last)) and m.get("step", 0) >= 5):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert read_meta(last)["step"] < json.loads((tmp_path / "ref" / "summary.json").read_text())["steps"]
    res = subprocess.run([str(BIN / "muon-pipeline"), "train", "--resume", "--data", str(converted_random),
                          "--output", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert same_weights(a, b)


# ------------------------------------------------------------------------------- the other cases
def scripted_val_loss(monkeypatch, values: list[float]) -> None:
    """val/loss of epoch e is values[e] (the last value after): the checkpoint policy under test, not the fit."""
    from pipeline.train.module import RegressionModule

    def validation_step(self, batch, batch_idx):
        v = values[min(self.trainer.current_epoch, len(values) - 1)]
        self.log("val/loss", torch.tensor(float(v)), batch_size=1, on_epoch=True, sync_dist=True)

    monkeypatch.setattr(RegressionModule, "validation_step", validation_step)


def steps_of(run_dir: Path) -> dict[str, int]:
    ckpts = run_dir / "checkpoints"
    return {name: read_meta(ckpts / f"{name}.ckpt")["step"] for name in ("last", "best")}


@pytest.mark.slow
def test_last_is_the_last_step_not_the_best(monkeypatch, tmp_path, converted_random):
    """Case 1: last.ckpt was written only when val/loss improved, so on a plateau it was the best step and
    a resume trained the steps after it again. Now last.ckpt is the last step whatever the score."""
    scripted_val_loss(monkeypatch, [1.0, 0.5, 0.8, 0.9])  # best after epoch 1, a plateau after
    summary, _ = run(monkeypatch, tiny(max_epochs=4), converted_random, tmp_path / "run", [])
    per_epoch = summary["steps"] // 4
    assert steps_of(tmp_path / "run") == {"last": summary["steps"], "best": 2 * per_epoch}
    assert summary["best_val_loss"] == 0.5


@pytest.mark.slow
def test_a_moved_run_keeps_its_best(monkeypatch, tmp_path, converted_random):
    """Case 4: resumed from a copy (scratch -> project space), best.ckpt was overwritten by a worse model and
    summary.json called it the best (the score lived in Lightning's callback state, keyed by an absolute
    dirpath). Now the best is the minimum over every validation the run logged, wherever the folder lives."""
    scripted_val_loss(monkeypatch, [1.0, 0.5, 0.7, 0.6])
    first, _ = run(monkeypatch, tiny(max_epochs=2), converted_random, tmp_path / "a", [])
    best = (tmp_path / "a" / "checkpoints" / "best.ckpt").read_bytes()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    second, _ = run(monkeypatch, None, converted_random, tmp_path / "b", [], resume=True, max_epochs=4)
    assert (tmp_path / "b" / "checkpoints" / "best.ckpt").read_bytes() == best  # never replaced by 0.7 or 0.6
    assert second["best_val_loss"] == 0.5 and second["steps"] == 2 * first["steps"]
    assert steps_of(tmp_path / "b") == {"last": second["steps"], "best": first["steps"]}


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """Case 5: Lightning wrote to $TMPDIR and moved the file; across file systems the move truncated the old
    checkpoint first, so a kill during the copy left a 0-byte last.ckpt. The writer now writes beside the
    target and renames; a failure (here: the disk fills mid-write) leaves the old file as it was."""
    from pipeline.train.checkpoints import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "x": torch.ones(3)}, target)
    before = target.read_bytes()

    def full_disk(obj, fh, *a, **kw):
        fh.write(b"PK\x03\x04partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary left


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_resume_from_a_damaged_last_falls_back_to_the_previous(monkeypatch, tmp_path, converted_random, damage):
    """Case 6: `train --resume` on a truncated or 0-byte last.ckpt ended in a traceback or "Aborted!". It now
    says so in one line and resumes from previous.ckpt; with neither readable it stops in one line (exit 2)."""
    log: list = []
    run(monkeypatch, tiny(max_epochs=2), converted_random, tmp_path / "run", log)
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "previous.ckpt").is_file()
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[: 1000] if damage == "truncate" else b"")
    r = CliRunner().invoke(main, ["train", "--resume", "--data", str(converted_random), "--output",
                                  str(tmp_path / "run"), "--max-epochs", "3"])
    assert r.exit_code == 0, r.output
    assert "last.ckpt is unreadable" in r.output and "resuming from" in r.output and "previous.ckpt" in r.output
    for name in ("last.ckpt", "previous.ckpt"):
        (ckpts / name).write_bytes(b"")
    r = CliRunner().invoke(main, ["train", "--resume", "--data", str(converted_random), "--output",
                                  str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "no readable previous.ckpt" in r.output, r.output


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_generated_training_job_requeues_itself_on_slurm_and_ends_as_uninterrupted(tmp_path, slurm, converted_random,
                                                                                   monkeypatch):
    """The generated training script on a real single-node SLURM: sent its time-limit warning (SIGUSR1 to
    the batch script, what `--signal=B:USR1@N` does before the limit), train checkpoints and the job
    requeues itself; the next start resumes, and the run ends with the uninterrupted run's weights."""
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny(max_epochs=12, checkpoint_every=5)))
    args = ["--config", str(tmp_path / "tiny.yaml"), "--data", str(converted_random)]
    ref = subprocess.run([str(BIN / "muon-pipeline"), "train", *args, "--output", str(tmp_path / "ref")],
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    r = CliRunner().invoke(main, ["submit-script", "--system", "slurm", "--job", "train", "--script", "train.sh",
                                  "--", *args, "--output", "run"])
    assert r.exit_code == 0, r.output
    script = (tmp_path / "train.sh").read_text()
    assert "#SBATCH --requeue" in script and "#SBATCH --signal=B:USR1@300" in script
    job = slurm.sbatch(str(tmp_path / "train.sh"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not ((m := read_meta(last)) and m.get("step", 0) >= 5):
        time.sleep(0.05)
    sent = subprocess.run(["scancel", "--signal=USR1", "--batch", job], capture_output=True, text=True, env=slurm.env)
    assert sent.returncode == 0, sent.stderr
    slurm.wait(240)
    log = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "requeueing job" in log and "start 1 of job" in log and "--resume" in log, log
    assert slurm.exit_codes(job) == ["0:0"], log
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == json.loads((tmp_path / "ref" / "summary.json").read_text())["steps"]
    a = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert same_weights(a, b)


@pytest.mark.slow  # three `train --devices 2` runs of two gloo ranks each
def test_ddp_two_ranks_stopped_mid_epoch_resume_to_the_uninterrupted_weights(tmp_path, converted_random):
    """DDP at the same world size: SIGTERM reaches rank 0 only (as a Ctrl-C in one terminal does); the ranks
    agree to stop at the same step, rank 0 writes the checkpoint, and `--resume --devices 2` ends with the
    uninterrupted run's weights. Another world size for that mid-epoch checkpoint is refused in one line."""
    import yaml

    cfg = tiny(batch_size=8, num_workers=2, max_epochs=2, checkpoint_every=2, accelerator="cpu")  # ~14 steps an epoch
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--data", str(converted_random), "--devices", "2"]
    ref = subprocess.run([str(BIN / "muon-pipeline"), *args, "--output", str(tmp_path / "ref")], capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "muon-pipeline"), *args, "--output", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not ((m := read_meta(last)) and m.get("step", 0) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    total = json.loads((tmp_path / "ref" / "summary.json").read_text())["steps"]
    assert proc.returncode == 143, out[-2000:]
    stopped = read_meta(last)
    assert 2 <= stopped["step"] < total and stopped["epoch_batches_done"] > 0, stopped
    one = subprocess.run([str(BIN / "muon-pipeline"), "train", "--resume", "--data", str(converted_random), "--output",
                          str(run_dir), "--devices", "1"], capture_output=True, text=True, timeout=600)
    assert one.returncode == 2 and "written mid-epoch" in one.stderr and "--devices 2 -> 1" in one.stderr, one.stderr
    res = subprocess.run([str(BIN / "muon-pipeline"), "train", "--resume", "--data", str(converted_random), "--output",
                          str(run_dir), "--devices", "2"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == total
    assert same_weights(a, b)


# ------------------------------------------------------------------------- the break-it review's cases
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_stops_cleanly_with_loader_workers(tmp_path, converted_random, sig):
    """A terminal's Ctrl-C and a batch system's SIGTERM reach every process: the DataLoader workers died
    with the signal and train crashed ("worker exited unexpectedly", exit 1, no stop checkpoint). The
    workers now leave the stop to the trainer: one line, 128 + N, and the resume ends as uninterrupted."""
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny(num_workers=2, max_epochs=4, checkpoint_every=3)))
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--data", str(converted_random)]
    ref = subprocess.run([str(BIN / "muon-pipeline"), *args, "-o", str(tmp_path / "ref")], capture_output=True,
                         text=True)
    assert ref.returncode == 0, ref.stderr
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "muon-pipeline"), *args, "-o", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not ((m := read_meta(last)) and m.get("step", 0) >= 3):
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out[-2000:]
    assert f"stopped by {sig.name} at step" in out and "Traceback" not in out and "unexpectedly" not in out, out
    res = subprocess.run([str(BIN / "muon-pipeline"), "train", "--resume", "--data", str(converted_random), "-o",
                          str(run_dir)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    a = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert same_weights(a, b)
    counts = json.loads((run_dir / "summary.json").read_text())
    assert counts["events_seen"] == json.loads((tmp_path / "ref" / "summary.json").read_text())["events_seen"]


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_with_130_and_a_first_signal_before_training_with_its_code(
        monkeypatch, tmp_path, converted_random):
    """A second Ctrl-C exited 1 with no message (Lightning turns KeyboardInterrupt into exit 1), and so did a
    Ctrl-C during Lightning's set-up, before the stop handlers were installed."""
    from pipeline.train.module import RegressionModule

    def twice(self, batch, batch_idx):
        if self.trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return RegressionModule._step(self, batch, "train")

    monkeypatch.setattr(RegressionModule, "training_step", twice)
    err, _ = run(monkeypatch, tiny(), converted_random, tmp_path / "a", [])
    assert getattr(err, "exit_code", None) == 130 and "at once" in str(err), err
    monkeypatch.undo()

    def early(self):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(RegressionModule, "on_fit_start", early, raising=False)
    err, _ = run(monkeypatch, tiny(), converted_random, tmp_path / "b", [])
    assert getattr(err, "exit_code", None) == 130 and "before its first checkpoint" in str(err), err


@pytest.mark.slow
def test_a_stop_during_the_validation_that_ends_the_run_by_early_stopping_resumes_to_the_end(
        monkeypatch, tmp_path, converted_random):
    """Stopped by a signal in the validation where EarlyStopping ends the run, the resume trained on for 11
    epochs (the early-stop decision was not in the checkpoint). It now ends where the uninterrupted run ends."""
    scripted_val_loss(monkeypatch, [1.0, 0.5, 0.7, 0.8, 0.9, 1.0])  # patience 1: stops after epoch 2
    cfg = tiny(max_epochs=6, patience=1)
    ref, ref_w = run(monkeypatch, cfg, converted_random, tmp_path / "ref", [])
    from pipeline.train.module import RegressionModule

    scripted = RegressionModule.validation_step

    def stop_in_last_validation(self, batch, batch_idx):
        if self.trainer.current_epoch == 2 and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return scripted(self, batch, batch_idx)

    monkeypatch.setattr(RegressionModule, "validation_step", stop_in_last_validation)
    stopped, _ = run(monkeypatch, cfg, converted_random, tmp_path / "run", [])
    assert getattr(stopped, "exit_code", None) == 143, stopped
    resumed, w = run(monkeypatch, None, converted_random, tmp_path / "run", [], resume=True)
    assert resumed["steps"] == ref["steps"] and same_weights(w, ref_w)


@pytest.mark.slow
def test_a_refused_resume_leaves_the_run_as_it_was(monkeypatch, tmp_path, converted_random):
    """A mid-epoch checkpoint resumed with another --batch-size trained part of the epoch twice, silently;
    with another --num-workers it was refused, but only after rewriting config.yaml, so every later plain
    --resume (what the SLURM script runs) was refused too."""
    cfg = tiny(num_workers=2)
    stopped, _ = run(monkeypatch, cfg, converted_random, tmp_path / "run", [], stop_at=5)
    assert getattr(stopped, "exit_code", None) == 143
    saved = {p: (tmp_path / "run" / p).read_bytes() for p in ("config.yaml", "run.json")}
    for flags in (["--batch-size", "16"], ["--num-workers", "0"]):
        r = CliRunner().invoke(main, ["train", "--resume", "--data", str(converted_random), "-o",
                                      str(tmp_path / "run"), *flags])
        assert r.exit_code == 2 and "mid-epoch" in r.output and "Traceback" not in r.output, r.output
        assert {p: (tmp_path / "run" / p).read_bytes() for p in saved} == saved
    r = CliRunner().invoke(main, ["train", "--resume", "--data", str(converted_random), "-o", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
