"""Training progress: one plain line every N optimiser steps for batch logs (step, epoch, loss,
events/s, ETA), and a single live rich line on a terminal.

Lightning's own bar redraws itself (noise in a file a batch system captures) and shows a ``v_num``
column; these callbacks are the training stage's equivalent of ``pipeline.progress.Reporter``.
:func:`quiet_lightning` removes Lightning's informational chatter (device lines, tips, FLOPs).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L


def quiet_lightning() -> None:
    """Lightning's INFO messages ("GPU available: ...", tips, "Total FLOPs") down to warnings only."""
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StepLog(L.Callback):
    """Print ``train step S/T  epoch E  loss L  N events/s  elapsed ...  ETA ...`` every ``every`` steps,
    and at least every ``max_silence`` seconds (slow steps: a batch log never looks dead); rank 0 only."""

    def __init__(self, every: int, total_steps: int, stream: Any = None, max_silence: float = 60.0) -> None:
        self.every, self.total = every, total_steps
        self.max_silence = max_silence
        self.stream = stream or sys.stderr
        self.events = 0
        self.t0 = self.t_last = 0.0
        self.loss_sum, self.loss_n = 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = self.t_last = time.perf_counter()
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.events += int(batch["event"].shape[0])
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.loss_sum += float(loss.detach())
            self.loss_n += 1
        step = trainer.global_step
        now = time.perf_counter()
        due = step % self.every == 0 if self.every > 0 else False
        if self.every > 0 and self.max_silence > 0 and now - self.t_last >= self.max_silence:
            due = True
        if not trainer.is_global_zero or not due or self.loss_n == 0:
            return
        rate = self.events / max(now - self.t_last, 1e-9)
        done = step - self.start_step
        eta = (self.total - step) * (now - self.t0) / max(done, 1) if self.total else 0.0
        print(f"train step {step}/{self.total}  epoch {trainer.current_epoch}  loss {self.loss_sum / self.loss_n:.4f}  "
              f"{rate:,.0f} events/s  elapsed {_duration(now - self.t0)}  ETA {_duration(eta)}",
              file=self.stream, flush=True)
        self.events, self.t_last, self.loss_sum, self.loss_n = 0, now, 0.0, 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.every <= 0:
            return
        val = trainer.callback_metrics.get("val/loss")
        if val is not None:
            print(f"val   step {trainer.global_step}/{self.total}  epoch {trainer.current_epoch}  "
                  f"val/loss {float(val):.4f}", file=self.stream, flush=True)


class LiveBar(L.Callback):
    """On a terminal: one redrawn rich line (step/total, epoch, loss, val/loss, events/s, ETA).

    Replaces Lightning's tqdm bar, whose ``v_num`` column and per-epoch bars say nothing to a user.
    """

    def __init__(self, total_steps: int, stream: Any = None) -> None:
        self.total = total_steps
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._task: Any = None
        self.events = 0
        self.t0 = 0.0
        self.loss = float("nan")
        self.val = ""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                             console=Console(file=self.stream), transient=False)
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total or None, completed=trainer.global_step, info="")
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._bar is None:
            return
        self.events += int(batch["event"].shape[0])
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            value = float(loss.detach())
            self.loss = value if self.loss != self.loss else 0.9 * self.loss + 0.1 * value  # smoothed
        rate = self.events / max(time.perf_counter() - self.t0, 1e-9)
        self._bar.update(self._task, completed=trainer.global_step,
                         info=f"epoch {trainer.current_epoch}  loss {self.loss:.4f}{self.val}  {rate:,.0f} events/s")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val = trainer.callback_metrics.get("val/loss")
        if self._bar is not None and val is not None and not trainer.sanity_checking:
            self.val = f"  val/loss {float(val):.4f}"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=trainer.global_step)
            self._bar.stop()
            self._bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
