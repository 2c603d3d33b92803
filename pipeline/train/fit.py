"""``muon-pipeline train``: config + dataset → a run directory.

RUN_DIR layout::

    config.yaml          the resolved config (overrides applied, hit_fields filled in)
    run.json             hit fields, normalisation, target scaling, dataset, versions
    summary.json         best val loss, steps, throughput; ``stopped_by`` when a signal stopped the run
    checkpoints/best.ckpt, last.ckpt, previous.ckpt   (see pipeline.train.checkpoints)
    logs/version_N/metrics.csv

A run stopped by SIGTERM, SIGINT or SIGUSR1 (a batch system's time limit or preemption, Ctrl-C) writes
``last.ckpt`` at the step it was at and exits 128 + the signal number; ``train --resume RUN`` continues
exactly where it stopped (same batches, same order, same random numbers: the same final weights as an
uninterrupted run).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Interrupted
from .config import TrainConfig, config_from_dict, dump_config

#: Training throughput of the shipped model on one CPU core (README, Training figures): for the
#: start-up estimate of a long CPU run.
CPU_EVENTS_PER_S = 900


def versions() -> dict[str, str]:
    import lightning
    import numpy
    import pyarrow
    import torch

    from .._version import __version__

    return {"muon-pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "lightning": lightning.__version__, "numpy": numpy.__version__, "pyarrow": pyarrow.__version__}


def resolve_threads(threads: int) -> int:
    """``trainer.threads``; 0 = 1 on <= 4 cores (measured 7x faster than 2 on a busy 2-core box), else half."""

    if threads:
        return threads
    from ..settings import available_cpus

    cores = available_cpus()
    return 1 if cores <= 4 else min(8, cores // 2)


def resolve_precision(cfg: TrainConfig, accelerator: str) -> str:
    """``auto``: bf16-mixed where CUDA runs the model, 32-true elsewhere (CPU bf16 is slow, not useful)."""
    import torch

    p = cfg.trainer.precision
    if p != "auto":
        return "32-true" if p == "32" else p
    from .device import on_cuda

    return "bf16-mixed" if on_cuda(accelerator) and torch.cuda.is_bf16_supported() else "32-true"


def preflight(cfg: TrainConfig | None, run_dir: str | Path, resume: bool) -> None:
    """The checks that need no torch: a config or ``--resume``, and a run directory that fits the request."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    previous = run_dir / "checkpoints" / "previous.ckpt"
    if resume:
        if not last.is_file() and not previous.is_file():
            raise ConfigError(f"--resume: no {last}; start a new run without --resume")
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume: no {run_dir / 'config.yaml'}; is {run_dir} a `muon-pipeline train` output?")
    else:
        if cfg is None:
            raise ConfigError("--config is required (unless --resume continues a run)")
        held = [p.name for p in (last, previous, run_dir / "checkpoints" / "best.ckpt") if p.exists()]
        if held:  # previous.ckpt alone: a kill between its rename and last.ckpt's
            raise ConfigError(f"{run_dir} already holds a run ({', '.join(held)}); pass --resume to continue it or "
                              "pick another --output")
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--output {run_dir}: exists and is not a directory")


def reconcile(cfg: TrainConfig | None, run_dir: Path, resume: bool, overrides: dict[str, Any] | None) -> TrainConfig:
    """The config a run trains with: ``cfg`` (a new run) or the saved one (``--resume``, whose ``trainer:``
    section a given config may change), then the command-line ``overrides``."""
    preflight(cfg, run_dir, resume)
    if resume:
        from .config import load_config

        saved = run_dir / "config.yaml"
        saved_cfg = load_config(saved, legacy=True)
        if cfg is not None and cfg.hit_fields is None:
            cfg = dataclasses.replace(cfg, hit_fields=saved_cfg.hit_fields)
        if cfg is not None and _without_trainer(cfg) != _without_trainer(saved_cfg):
            raise ConfigError(f"--resume: the config differs from {saved} outside `trainer:`; the checkpoint "
                              "cannot continue a different model or data setup")
        # A config given with --resume may change `trainer:` (e.g. more max_steps); the lr schedule keeps
        # the checkpoint's length, so steps beyond it run at the final 5 % learning rate.
        if cfg is not None:
            _say_budget_change(saved_cfg.trainer, cfg.trainer, overrides or {})
        cfg = dataclasses.replace(saved_cfg, trainer=cfg.trainer) if cfg is not None else saved_cfg
    assert cfg is not None  # preflight: a config unless resuming
    return _apply_overrides(cfg, overrides or {})


def train(cfg: TrainConfig | None, data_dir: str | Path, run_dir: str | Path, *, resume: bool = False,
          overrides: dict[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train one run; returns a summary (best val loss, epochs, paths, throughput).

    This function reconciles the run (a new config or ``--resume``, the overrides), writes the run
    directory and drives the Trainer; the data side (open, normalise, scale targets, loaders, epoch
    plan) is :class:`~pipeline.train.datamodule.RegressionDataModule`. The dataset's readers' lock
    (:func:`pipeline.locks.reading`) is held from the open to the end of the fit: no convert, finalize
    or migrate deletes the shards meanwhile (the DataLoader workers share it; each DDP rank, a process
    of its own, takes its own).
    """
    from ..locks import reading

    with reading(str(data_dir), "train"):
        return _train(cfg, data_dir, run_dir, resume=resume, overrides=overrides, quiet=quiet)


def _train(cfg: TrainConfig | None, data_dir: str | Path, run_dir: str | Path, *, resume: bool,
           overrides: dict[str, Any] | None, quiet: bool) -> dict[str, Any]:
    import time

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger

    from .checkpoints import (
        AtomicCheckpointIO,
        RunCheckpoints,
        RunStopped,
        StopSignals,
        check_resumable,
        read_meta,
        resume_checkpoint,
    )
    from .datamodule import RegressionDataModule
    from .module import RegressionModule

    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    cfg = reconcile(cfg, run_dir, resume, overrides)
    start_ckpt = resume_checkpoint(run_dir) if resume else None  # last.ckpt, or previous.ckpt if it is damaged

    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)  # before the model's initial weights
    data = RegressionDataModule(cfg, data_dir)
    data.setup("fit")
    cfg, hit_fields, total_steps = data.cfg, data.hit_fields, data.total_steps
    assert data.info is not None and data.norm is not None and data.train_stream is not None
    start_meta = (read_meta(start_ckpt) or {}) if start_ckpt is not None else {}
    if start_ckpt is not None:  # before anything is written: a refused resume leaves the run as it was
        check_resumable(start_meta, cfg.trainer.devices, data.train_plan["workers"], cfg.data.batch_size)

    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, saved)
    run_info = {**data.run_record(), "versions": versions(), "command": sys.argv}
    (run_dir / "run.json").write_text(json.dumps(run_info, indent=2))

    if resume:
        from .runfiles import load_module

        module = load_module(start_ckpt)  # weights_only=True, whatever the torch version's default
    else:
        module = RegressionModule(cfg.to_dict(), hit_fields, data.info.muon_fields, data.norm.to_dict(),
                                  data.centres, data.scales, total_steps)

    t = cfg.trainer
    signals = StopSignals()
    checkpoint = RunCheckpoints(run_dir / "checkpoints", t.checkpoint_every, t.max_steps, signals)
    counter = trained_events_counter()
    callbacks: list[Any] = [checkpoint, counter]
    if t.patience:
        # strict=False: a run resumed from an epoch-end checkpoint replays on_train_epoch_end before its next
        # validation; the check of that epoch was made (and saved) before the checkpoint
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=t.patience, strict=False))
    tty = sys.stderr.isatty()
    from .progress_log import LiveBar, StepLog, quiet_lightning

    quiet_lightning()
    if not quiet and tty:
        callbacks.append(LiveBar(total_steps))
    elif t.progress_every:
        callbacks.append(StepLog(t.progress_every, total_steps))
    from .device import normalise, resolve

    accelerator = resolve(normalise(t.accelerator, "trainer.accelerator"))  # gpu asked, none there: one line
    precision = resolve_precision(cfg, accelerator)
    threads = resolve_threads(t.threads)
    if accelerator == "cpu":
        import torch

        torch.set_num_threads(threads)
    # Lightning notices an `srun` binary and suggests using it: noise outside a SLURM allocation.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")
    trainer = L.Trainer(
        max_epochs=-1 if t.max_steps else t.max_epochs, max_steps=t.max_steps or -1,
        accelerator=accelerator, devices=t.devices,
        strategy="ddp" if t.devices > 1 else "auto", precision=precision,
        gradient_clip_val=t.gradient_clip or None, callbacks=callbacks,
        logger=CSVLogger(run_dir, name="logs"), default_root_dir=run_dir,
        limit_train_batches=t.limit_train_batches or 1.0, limit_val_batches=t.limit_val_batches or 1.0,
        log_every_n_steps=max(1, min(50, data.steps_per_epoch)), num_sanity_val_steps=0,
        # a run shorter than one epoch still validates (and so writes best.ckpt) at its end
        val_check_interval=t.max_steps if 0 < t.max_steps < data.steps_per_epoch else None,
        enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()])
    if not quiet:
        n_params = sum(p.numel() for p in module.parameters())
        print(f"train: {n_params:,} parameters, {len(hit_fields)} hit + {len(cfg.frame_fields)} frame inputs, "
              f"{data.train_stream.events} train / {data.val_stream.events} val events, {total_steps} steps "
              f"on {accelerator.upper()} ({precision}); writing {run_dir}", file=sys.stderr, flush=True)
        if start_ckpt is not None:
            print(f"train: resuming {run_dir} from step {start_meta.get('step', '?')} of {total_steps} ({start_ckpt.name})", file=sys.stderr,
                  flush=True)
        minutes = total_steps * cfg.data.batch_size / CPU_EVENTS_PER_S / 60
        if accelerator == "cpu" and minutes > 5:
            print(f"train: note: {total_steps} steps of {cfg.data.batch_size} events on a CPU take roughly "
                  f"{minutes:.0f} min (~{CPU_EVENTS_PER_S} events/s per core with the shipped model); "
                  "--max-steps N shortens the run", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Our IterableDataset's len() is exact per worker (see data.stream.ShardStream), so Lightning's
        # generic warning about len() with several workers does not apply.
        warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
        warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
        at_once = False
        signals.install()  # from here: Lightning's set-up and the checkpoint's restore included
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(start_ckpt) if start_ckpt else None,
                        weights_only=True)
        except RunStopped as stop:
            checkpoint.stopped_by, at_once = stop.signum, stop.at_once
        finally:
            signals.remove()
    seconds = time.perf_counter() - start
    best_path = run_dir / "checkpoints" / "best.ckpt"
    summary = {"run_dir": str(run_dir), "best_checkpoint": str(best_path) if best_path.is_file() else "",
               "best_val_loss": checkpoint.best, "epochs": trainer.current_epoch,
               "steps": trainer.global_step, "seconds": seconds, "precision": precision, "threads": threads,
               "train_events": data.train_stream.events, "data_path": data.data_path,
               # a stop at once may leave the ranks out of step: no collective then
               **({} if at_once else counter.totals(trainer))}
    if checkpoint.stopped_by is not None:
        summary["stopped_by"] = signal.Signals(checkpoint.stopped_by).name
    finished = _finished_summary(run_dir) if resume and checkpoint.stopped_by is None else None
    if finished is not None and finished.get("steps") == trainer.global_step:
        # a resume of a run that had finished: nothing trained, the run's summary stays as it was
        print(f"train: {run_dir} had finished ({trainer.global_step} steps); nothing to do", file=sys.stderr,
              flush=True)
        return finished
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if checkpoint.stopped_by is not None:
        raise _stopped(checkpoint.stopped_by, at_once, run_dir, data_dir, trainer)
    if trainer.is_global_zero:  # what was actually trained on, summed over ranks
        run_info["trained"] = {k: summary[k] for k in ("epochs", "steps", "events_seen", "batches_seen",
                                                       "epochs_completed_events")}
        (run_dir / "run.json").write_text(json.dumps(run_info, indent=2))
    return summary


def _stopped(signum: int, at_once: bool, run_dir: Path, data_dir: str | Path, trainer: Any) -> BaseException:
    """What a stopped run ends with: one line (rank 0 only) and exit 128 + ``signum``."""
    import shlex

    from .checkpoints import read_meta

    if not trainer.is_global_zero:
        return SystemExit(128 + signum)  # rank 0 says it once
    name = signal.Signals(signum).name
    last = run_dir / "checkpoints" / "last.ckpt"
    meta = read_meta(last)
    resume = (f"muon-pipeline train --resume --data {shlex.quote(str(data_dir))} "
              f"--output {shlex.quote(str(run_dir))}")
    if meta is None:
        return Interrupted(f"train: stopped by {name}{' at once' if at_once else ''} before its first checkpoint; "
                           "run the same command again to start over", signum)
    how = "at once (no checkpoint at this step; the last one is at" if at_once else "at"
    return Interrupted(f"train: stopped by {name} {how} step {meta.get('step', trainer.global_step)}"
                       f"{')' if at_once else ''}, checkpoint {last}; resume with: {resume}", signum)


def trained_events_counter() -> Any:
    """A Lightning callback counting the training events and batches each rank actually ran (padding
    repeats included), per epoch; its ``totals(trainer)`` sums them over ranks."""
    from lightning.pytorch.callbacks import Callback

    class TrainedEvents(Callback):
        def __init__(self) -> None:
            self.events = self.batches = self.epoch_events = 0
            self.per_epoch: list[int] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            n = int(batch["event"].shape[0])
            self.events, self.batches, self.epoch_events = self.events + n, self.batches + 1, self.epoch_events + n

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.per_epoch.append(self.epoch_events)
            self.epoch_events = 0

        # restored by a resume (Lightning saves callback states): the counts cover the whole run. Every rank
        # runs the same batches per epoch (the deal pads), so rank 0's counts stand for each rank's.
        def state_dict(self) -> dict[str, Any]:
            return {"events": self.events, "batches": self.batches, "epoch_events": self.epoch_events,
                    "per_epoch": list(self.per_epoch)}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.events, self.batches = int(state.get("events", 0)), int(state.get("batches", 0))
            self.epoch_events = int(state.get("epoch_events", 0))
            self.per_epoch = [int(v) for v in state.get("per_epoch", [])]

        def totals(self, trainer: Any) -> dict[str, Any]:
            import torch

            local = torch.tensor([self.events, self.batches, *self.per_epoch], dtype=torch.float64,
                                 device=trainer.strategy.root_device)
            summed = trainer.strategy.reduce(local, reduce_op="sum") if trainer.world_size > 1 else local
            values = [int(v) for v in summed.tolist()]
            return {"events_seen": values[0], "batches_seen": values[1], "epochs_completed_events": values[2:]}

    return TrainedEvents()


def _say_budget_change(saved: Any, given: Any, overrides: dict[str, Any]) -> None:
    """One line when ``--resume --config`` changes the step budget the run was started with (and no
    --max-steps / --max-epochs sets it again): the given config's ``trainer:`` section replaces the saved one."""
    if overrides.get("trainer.max_steps") is not None or overrides.get("trainer.max_epochs") is not None:
        return

    def budget(t: Any) -> str:
        return f"{t.max_steps} steps" if t.max_steps else f"{t.max_epochs} epochs"

    if budget(saved) != budget(given):
        print(f"train: note: --config changes this run's budget from {budget(saved)} to {budget(given)} (its "
              "trainer: section replaces the saved one); pass --max-steps or --max-epochs to keep it",
              file=sys.stderr, flush=True)


def _without_trainer(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("trainer")
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("num_workers", "batch_size", "verify_checksums",
                                                                 "resident", "resident_fraction")}
    return d


def _apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Command-line overrides (``trainer.max_epochs`` etc.), re-validated like the YAML."""
    d = cfg.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        target = d[section] if section else d
        if name not in target:
            raise ConfigError(f"unknown override {key}")
        target[name] = value
    return config_from_dict(d)


def _finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that ended without a stop signal, or None (none yet, unreadable, or stopped)."""
    try:
        doc = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "stopped_by" not in doc else None
