"""The run's checkpoints, owned by the product rather than left to Lightning's defaults.

``RUN/checkpoints/`` holds:

* ``last.ckpt``: where the run is. Written at every validation, every ``trainer.checkpoint_every``
  optimiser steps (a kill -9 loses at most that much work), at the last step, and when a stop signal
  arrives (SIGTERM, SIGINT, SIGUSR1: :class:`StopSignals`). The previous one is kept as
  ``previous.ckpt``, so a resume falls back to it when ``last.ckpt`` cannot be read.
* ``best.ckpt``: the weights with the lowest val/loss of every validation the run ever logged, through
  any number of resumes. Its score travels inside it (``checkpoint["muon_pipeline"]["val_loss"]``),
  not in a callback state tied to an absolute path, so a run folder that was copied or moved resumes
  and keeps its best exactly as it would have in place.

Every file is written to a temporary in the same folder, flushed to disk and renamed over the old
one (:class:`AtomicCheckpointIO`): a kill at any moment leaves the previous checkpoint whole. Lightning's
own writer puts the file in ``$TMPDIR`` and moves it. Across file systems (node-local ``/tmp``, shared run
folder) that move truncates the target first.

A checkpoint also carries the RNG states of torch (CPU and CUDA), numpy and Python, restored at the first
step after a resume. It carries the loader's position too: Lightning's loop state holds the epoch and the
batches done in it, and the loaders continue from there (:mod:`pipeline.train.data.epoch`). So a resumed
run trains on the same batches, in the same order, with the same random numbers, as one that never
stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import ConfigError
from ..format import TMP_MARK
from ..signals import STOP_SIGNALS

LAST, PREVIOUS, BEST = "last.ckpt", "previous.ckpt", "best.ckpt"
#: The key of this tool's own part of a checkpoint.
KEY = "muon_pipeline"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary beside the target, fsync, then ``os.replace``: never a torn file.

    When the target is ``last.ckpt`` the old one becomes ``previous.ckpt`` first (a rename: atomic too).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{TMP_MARK}{path.name}.{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            if path.name == LAST and path.exists():
                os.replace(path, path.parent / PREVIOUS)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_temporaries(folder: Path) -> None:
    """Remove what a killed writer left (``.tmp-*.ckpt.PID``) in the checkpoint folder."""
    if folder.is_dir():
        for p in folder.glob(f"{TMP_MARK}*.ckpt.*"):
            with contextlib.suppress(OSError):
                p.unlink()


def read_meta(path: Path) -> dict[str, Any] | None:
    """This tool's part of a checkpoint (``val_loss``, ``step``, ...), or None when the file is not a
    readable torch checkpoint (missing, truncated, empty, overwritten). ConfigError for a checkpoint that
    holds objects other than tensors and plain containers (refused, never unpickled: ``weights_only``)."""
    import pickle

    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"{path}: refusing to load a checkpoint that holds objects other than tensors and "
                          f"plain containers (weights_only): {' '.join(str(err).split())[:200]}") from err
    except Exception:  # noqa: BLE001 - any damage of the archive means: not usable
        return None
    meta = doc.get(KEY) if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return {"val_loss": None, "step": int(doc.get("global_step", 0)) if isinstance(doc, dict) else 0}
    return meta


def resume_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a ``--resume`` continues from: ``last.ckpt``, or ``previous.ckpt`` when the last one
    is unreadable (saying so on stderr). ConfigError (one line) when neither can be read."""
    folder = run_dir / "checkpoints"
    last, previous = folder / LAST, folder / PREVIOUS
    if read_meta(last) is not None:
        return last
    why = "missing" if not last.exists() else f"unreadable ({last.stat().st_size} bytes: truncated or damaged)"
    meta = read_meta(previous)
    if meta is not None:
        print(f"train: {last} is {why}; resuming from {previous} (step {meta.get('step', '?')})",
              file=sys.stderr, flush=True)
        return previous
    raise ConfigError(f"--resume: {last} is {why} and no readable {PREVIOUS} is beside it; start a new run "
                      "(another --output) or restore the checkpoint")


def rng_states() -> dict[str, Any]:
    """The RNG states of torch (CPU, CUDA), numpy's global generator and Python's ``random``, as tensors
    and plain containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()  # noqa: NPY002 - the global generator, which any library may draw from
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
            "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]}}


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class RunStopped(Exception):  # noqa: N818 - a stop asked for, not an error
    """Raised from the loop after the stop checkpoint was written (``at_once``: a second Ctrl-C, no
    checkpoint at this step): ``signum`` and the ``step``. An Exception, not KeyboardInterrupt, which
    Lightning would turn into ``sys.exit(1)``."""

    def __init__(self, signum: int, step: int, at_once: bool = False) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.at_once = signum, step, at_once


class StopSignals:
    """While installed: SIGTERM, SIGINT and SIGUSR1 only note that a stop was asked (``received``); the run
    stops at the end of the current step, with a checkpoint. A second SIGINT stops at once (Ctrl-C twice).

    Installed before the fit, and again when training starts, after Lightning registered its own handlers
    (which would end the run with no checkpoint and exit 0 on SIGTERM); the caller removes them after the
    fit (``pipeline.train.fit.train``)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received == signum == signal.SIGINT:
            raise RunStopped(signum, -1, at_once=True)
        self.received = signum

    def install(self) -> None:
        """Install (again: Lightning replaces handlers when its fit starts); ``remove`` restores the
        handlers found at the first install."""
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave signals alone
                old = signal.signal(sig, self._handler)
                self._old.setdefault(sig, old)

    def remove(self) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old)
        self._old = {}


class RunCheckpoints(Checkpoint):
    """Writes ``last``/``best`` as the module docstring says; ``stopped_by`` is the signal that ended the
    run (None: it ran to its end).

    A ``Checkpoint`` subclass, so Lightning runs it after every other callback (EarlyStopping's state is
    then this epoch's when it is saved) and adds no ModelCheckpoint of its own. Where ``last`` is written
    follows Lightning's resume rules: mid-epoch after a step (``on_train_batch_end``, never on the epoch's
    last batch: a resume from there would skip that epoch's validation), and at an epoch's end after its
    validation (``on_train_epoch_end``); a stop asked for on an epoch's last batch waits for that point.
    """

    def __init__(self, folder: Path, every: int, max_steps: int, signals: StopSignals) -> None:
        self.folder, self.every, self.max_steps, self.signals = folder, every, max_steps, signals
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_val: float | None = None
        self.stopped_by: int | None = None
        self._saved_step = -1
        self._rng_to_restore: dict[str, Any] | None = None
        self._should_stop = False

    @property
    def state_key(self) -> str:
        return "RunCheckpoints"

    # -- what a checkpoint carries -------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        dm = trainer.datamodule
        plan = getattr(dm, "train_plan", {}) or {}
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        checkpoint[KEY] = {"val_loss": self.last_val, "step": int(trainer.global_step),
                           "epoch": int(trainer.current_epoch),
                           "epoch_batches_done": 0 if done >= getattr(dm, "steps_per_epoch", 0) else done,
                           "world_size": int(trainer.world_size), "readers": int(plan.get("workers", 1)),
                           "batch_size": int(dm.cfg.data.batch_size) if dm is not None else None,
                           "should_stop": bool(trainer.should_stop), "rng": rng_states()}

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(KEY) or {}
        self._rng_to_restore = meta.get("rng")
        self._should_stop = bool(meta.get("should_stop"))

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        clean_temporaries(self.folder)
        meta = read_meta(self.folder / BEST)  # the best so far is the one on disk, wherever the run now lives
        if meta is not None and meta.get("val_loss") is not None:
            self.best, self.best_step = float(meta["val_loss"]), meta.get("step")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.signals.install()  # again: Lightning registered its own handlers at the start of fit
        if self._should_stop:  # the run had ended (early stopping) when its last checkpoint was written
            trainer.should_stop = True
        if self._rng_to_restore is not None:  # after the resumed epoch's loader was made (it draws a seed)
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        if self._stop_asked(trainer):  # a signal during Lightning's set-up or the checkpoint's restore
            self._stop(trainer)


    # -- when it writes ------------------------------------------------------------------------------
    def _save_last(self, trainer: Any) -> None:
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.folder / LAST)
            self._saved_step = trainer.global_step

    def _stop_asked(self, trainer: Any) -> bool:
        asked = self.signals.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            asked = bool(trainer.strategy.reduce_boolean_decision(asked, all=False))
        return asked

    def _stop(self, trainer: Any) -> None:
        # raised, not should_stop: that would run a validation the uninterrupted run never ran
        self.stopped_by = self.signals.received or signal.SIGTERM
        raise RunStopped(self.stopped_by, int(trainer.global_step))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        asked = self._stop_asked(trainer)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's end (after its validation) writes last, and stops if asked
        step = trainer.global_step
        if asked or (self.every and step % self.every == 0) or step == self.max_steps:
            self._save_last(trainer)
        if asked:
            self._stop(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val/loss")
        if value is None:
            return
        self.last_val = float(value)
        if math.isnan(self.last_val):
            return  # never the best; and a NaN best would never be replaced
        if self.best is None or math.isnan(self.best) or self.last_val < self.best:
            self.best, self.best_step = self.last_val, int(trainer.global_step)
            trainer.save_checkpoint(self.folder / BEST)
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:  # a validation inside an epoch
            self._saved_step = -1  # its checkpoint carries its score: write last again
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._saved_step = -1
        self._save_last(trainer)
        if self._stop_asked(trainer):
            self._stop(trainer)


def check_resumable(meta: dict[str, Any], world_size: int, readers: int, batch_size: int) -> None:
    """Refuse (ConfigError, one line) to continue a checkpoint written in the middle of an epoch with
    another deal of that epoch: other devices, readers per device or batch size. At an epoch's end any
    of them may change (the next epoch is dealt anew). Called before the run folder is written."""
    if not meta.get("epoch_batches_done"):
        return
    was = {"--devices": meta.get("world_size"), "readers per device": meta.get("readers"),
           "--batch-size": meta.get("batch_size")}
    now = {"--devices": world_size, "readers per device": readers, "--batch-size": batch_size}
    changed = [f"{k} {was[k]} -> {now[k]}" for k in was if was[k] is not None and was[k] != now[k]]
    if changed:
        raise ConfigError(f"--resume: the checkpoint was written mid-epoch (step {meta.get('step')}) and this run "
                          f"deals that epoch differently ({', '.join(changed)}); resume with the same --devices, "
                          "--batch-size and data.num_workers (the streaming loader reads with max(num_workers, 1) "
                          "readers per device, the resident one with 1)")
