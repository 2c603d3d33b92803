"""SIGTERM and kill -9 at random moments of `train`: every interrupted run, resumed to the same step
budget, ends with the uninterrupted run's weights, bit for bit.

    .venv/bin/python bench/fault_train.py [--trials 10] [--events 600] [--seed 1] [--out DIR] [--workers 0]

A small dataset is simulated and converted; the uninterrupted run (the reference) is timed. Then, for each
of SIGTERM and SIGKILL, ``--trials`` times: ``train`` starts, the signal reaches its main process at a
moment drawn uniformly from [0, reference duration] (start-up and data loading included, as on a batch
slot), and the run is continued the way the generated SLURM script does it: ``train --resume`` when a
checkpoint exists, the same command otherwise, until it exits 0. Checked per trial:

* SIGTERM: exit status 143 (or 0 when it arrived after the run ended), and one line saying where it
  stopped and how to resume;
* no process of the run is left 5 s after the signal (DataLoader workers end with their parent);
* the final ``last.ckpt`` holds the reference's weights exactly (``torch.equal`` on every tensor), the
  same step count, and no temporary (``.tmp-*``) is left in ``checkpoints/``.

Prints one line per signal and a JSON summary; exit status 1 if any trial differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_kill import CLI, TAG, orphans_after  # noqa: E402


def config(workers: int) -> dict:
    return {"fields": ["truthMuon_eta", "truthMuon_phi", "truthMuon_pt", "truthMuon_q"],
            "inverse_fields": ["truthMuon_pt"], "dim": 16, "heads": 2, "encoder_layers": 1,
            "data": {"batch_size": 32, "num_workers": workers, "shuffle_buffer": 64},
            "trainer": {"max_epochs": 6, "lr": 3.0e-3, "warmup_steps": 2, "patience": 3, "threads": 1,
                        "checkpoint_every": 3, "progress_every": 0}}


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def finish(args: list[str], run: Path) -> int:
    """Continue a run as the SLURM script does: --resume when a checkpoint exists; returns the restarts."""
    restarts = 0
    while True:
        ckpts = run / "checkpoints"
        resume = ["--resume"] if (ckpts / "last.ckpt").exists() or (ckpts / "previous.ckpt").exists() else []
        r = subprocess.run([CLI, "train", *args, "--output", str(run), *resume], capture_output=True, text=True)
        if r.returncode == 0:
            return restarts
        restarts += 1
        if restarts > 3:
            raise SystemExit(f"train did not finish: {r.stdout}{r.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--events", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="data.num_workers of the run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = args.out or Path(tempfile.mkdtemp(prefix="fault_train_"))
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([CLI, "simulate", str(work / "raw.root"), "--events", str(args.events), "--seed", str(args.seed),
                    "--background-per-event", "20"], check=True, capture_output=True)
    subprocess.run([CLI, "convert", str(work / "raw.root"), "-o", str(work / "ds"), "-q"], check=True)
    (work / "cfg.yaml").write_text(yaml.safe_dump(config(args.workers)))
    train_args = ["--config", str(work / "cfg.yaml"), "--data", str(work / "ds")]

    ref = work / "ref"
    t0 = time.perf_counter()
    subprocess.run([CLI, "train", *train_args, "--output", str(ref)], check=True, capture_output=True)
    duration = time.perf_counter() - t0
    want, want_steps = weights(ref), json.loads((ref / "summary.json").read_text())["steps"]

    summary, failed = {"reference_seconds": round(duration, 2), "steps": want_steps}, False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        landed = identical = orphaned = 0
        problems = []
        for trial in range(args.trials):
            run = work / f"{sig.name}-{trial}"
            token = f"{run.name}-{time.time_ns()}"
            proc = subprocess.Popen([CLI, "train", *train_args, "--output", str(run)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env={**os.environ, TAG: token})
            try:
                out, _ = proc.communicate(timeout=rng.uniform(0, duration))
            except subprocess.TimeoutExpired:
                landed += 1
                proc.send_signal(sig)
                out, _ = proc.communicate()
            code = proc.returncode
            left = orphans_after(token)
            orphaned += bool(left)
            status_ok = sig == signal.SIGKILL or code in (0, 143)
            line_ok = sig == signal.SIGKILL or code == 0 or "stopped by SIGTERM" in out
            restarts = finish(train_args, run)
            steps = json.loads((run / "summary.json").read_text())["steps"]
            got = weights(run)
            same = got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
            temps = [p.name for p in (run / "checkpoints").glob(".tmp-*")]
            ok = same and steps == want_steps and not temps and status_ok and line_ok and not left
            identical += ok
            if not ok:
                problems.append({"trial": trial, "exit": code, "same_weights": same, "steps": steps,
                                 "temporaries": temps, "orphans": left, "restarts": restarts, "output": out[-500:],
                                 "kept": str(run)})
                continue
            shutil.rmtree(run)
        failed |= bool(problems)
        summary[sig.name] = {"trials": args.trials, "signalled_while_running": landed, "identical": identical,
                             "runs_with_orphans": orphaned, "problems": problems}
        print(f"{sig.name:8s} {args.trials} trials, {landed} signalled while running (uniform in 0-{duration:.1f} s), "
              f"{identical} identical to the uninterrupted run after resume, {orphaned} with orphan processes",
              flush=True)
    print(json.dumps(summary, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
