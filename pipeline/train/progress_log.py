"""One plain line every N optimiser steps for batch logs: step, loss, events/s, ETA.

Lightning's progress bar redraws itself, which is noise in a file a batch system captures; this
callback is the training stage's equivalent of ``pipeline.progress.Reporter``'s plain lines.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StepLog(L.Callback):
    """Print ``train step S/T  loss L  E events/s  ETA ...`` every ``every`` steps (rank 0 only)."""

    def __init__(self, every: int, total_steps: int, stream: Any = None) -> None:
        self.every, self.total = every, total_steps
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
        if not trainer.is_global_zero or self.every <= 0 or step % self.every or self.loss_n == 0:
            return
        now = time.perf_counter()
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
