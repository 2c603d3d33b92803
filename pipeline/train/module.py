"""A thin LightningModule around :class:`~pipeline.train.model.MuonRegressor`.

Lightning owns the loop (devices, precision, DDP, checkpoints, logging); the physics lives in the
plain ``nn.Module``. Everything needed to rebuild the model and feed it the same inputs (config,
hit fields, input normalisation, target scaling) is saved as hyper-parameters, i.e. inside every
checkpoint, so ``evaluate`` needs nothing but the checkpoint and a dataset.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from .config import config_from_dict
from .model import MuonRegressor, build_model


class RegressionModule(L.LightningModule):
    def __init__(self, config: dict[str, Any], hit_fields: list[str], muon_fields: list[str],
                 normalisation: dict[str, Any], centres: list[float], scales: list[float],
                 total_steps: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = config_from_dict(config, legacy=True)  # runs from before frame_fields still load
        if self.cfg.task == "hit_filter":  # per-hit classification (pipeline.train.hitfilter)
            from .hitfilter import build_hit_filter

            self.model: Any = build_hit_filter(self.cfg, hit_fields)
        else:
            self.model = build_model(self.cfg, hit_fields, muon_fields, centres, scales)
        # ``trainer.compile``: the compiled wrapper is kept outside the module tree (a plain dict), so
        # parameters and checkpoints are those of ``self.model`` either way.
        self._compiled: dict[str, Any] = {}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch)

    def net(self) -> Any:
        """The model as the steps run it: ``torch.compile``-d when ``trainer.compile`` is set."""
        if not self.cfg.trainer.compile:
            return self.model
        if "model" not in self._compiled:
            self._compiled["model"] = compile_model(self.model)
        return self._compiled["model"]

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        out = self.net()(batch)  # [B, M, T]; the hit filter: [B, L]
        if self.cfg.task == "hit_filter":
            loss, n = self.model.loss(out, batch), int(batch["hit_mask"].sum())
        else:
            loss, n = self.model.task.loss(out, batch["muons"], batch["muon_mask"]), int(batch["muon_mask"].sum())
        self.log(f"{stage}/loss", loss, batch_size=n, on_step=stage == "train",
                 on_epoch=True, prog_bar=True, sync_dist=stage != "train")
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        t = self.cfg.trainer
        # weight decay on the weight matrices only: not on biases, LayerNorms, the slot embedding
        opt = torch.optim.AdamW(self.model.param_groups(t.weight_decay), lr=t.lr)
        total = max(int(self.hparams.total_steps), 1)
        warmup = min(t.warmup_steps, total // 5)  # a short run must not spend itself warming up

        def factor(step: int) -> float:
            """Linear warm-up, then cosine to 5 % of lr at the estimated last step."""
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``--resume`` of a run saved with one AdamW group (before :meth:`MuonRegressor.param_groups`):
        its optimiser and scheduler states are split into the two groups, so the moments carry over."""
        states = checkpoint.get("optimizer_states") or []
        if len(states) != 1 or len(states[0].get("param_groups", [])) != 1:
            return
        states[0] = split_optimizer_state(states[0], self.model)
        for sched in checkpoint.get("lr_schedulers") or []:
            for key in ("base_lrs", "_last_lr"):
                if len(sched.get(key) or []) == 1:
                    sched[key] = sched[key] * 2



class _CompiledOrEager:
    """``torch.compile(model, dynamic=True)`` that falls back to the eager model, with one warning, if
    compilation fails at its first call (no C++ compiler, unsupported platform or op)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.ok = model, False
        self.compiled: Any = torch.compile(model, dynamic=True)

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        if self.compiled is None:
            return self.model(batch)
        if self.ok:
            return self.compiled(batch)
        try:
            out = self.compiled(batch)
        except Exception as err:  # noqa: BLE001 - any failure to compile means: run eager
            import warnings

            warnings.warn(f"trainer.compile: torch.compile failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); running eager", stacklevel=2)
            self.compiled = None
            return self.model(batch)
        self.ok = True
        return out


def compile_model(model: torch.nn.Module) -> Any:
    """The model under ``torch.compile`` (dynamic shapes: batches vary in padded length), eager on failure."""
    return _CompiledOrEager(model)


def split_optimizer_state(state: dict[str, Any], model: MuonRegressor) -> dict[str, Any]:
    """A one-group optimiser ``state_dict`` over ``model.parameters()`` → the two groups of
    ``model.param_groups``: the same per-parameter state (AdamW moments, step), renumbered as the new
    groups order the parameters; the no-decay group gets weight decay 0."""
    (group,) = state["param_groups"]
    position = {id(p): i for i, p in enumerate(model.parameters())}
    new_groups, new_state, n = [], {}, 0
    for g in model.param_groups(group["weight_decay"]):
        ids = []
        for p in g["params"]:
            old = group["params"][position[id(p)]]
            if old in state["state"]:
                new_state[n] = state["state"][old]
            ids.append(n)
            n += 1
        new_groups.append({**group, "weight_decay": g["weight_decay"], "params": ids})
    return {"state": new_state, "param_groups": new_groups}
