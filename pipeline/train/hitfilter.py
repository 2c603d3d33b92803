"""The hit-filter task: per hit, the probability that it belongs to a truth muon.

The same encoder as the regression (:class:`~pipeline.train.model.HitEncoder`, full or windowed
attention) and a per-hit head (Dense → one logit). Label of a hit: its truth link is >= 0 (any truth
muon of the event, however many there are; the loader does not cap muons for this task, see
:func:`~.task_config.label_max_muons`). Loss: binary cross-entropy on the logits over real hits (padding excluded),
muon hits weighted by ``pos_weight``, in float32 whatever the autocast state.

The model's output is the logit [B, L] in hit order: ``sigmoid(logit)`` is the score that ``evaluate``
and ``predict`` report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Dense, float32_region
from .model import HitEncoder, MuonRegressor, attention_spec

if TYPE_CHECKING:
    from .config import TrainConfig

class HitFilter(nn.Module):
    """batch → per-hit logits [B, L] (padding: whatever the head gives; masked by ``hit_mask``)."""

    def __init__(self, encoder: HitEncoder, dim: int, pos_weight: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(dropout), Dense(dim, 1))
        self.pos_weight = pos_weight

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        encoded = self.encoder(batch["hits"], batch["hit_mask"])  # [B, L, D]
        with float32_region(encoded):
            return self.head(encoded.float()).squeeze(-1)  # [B, L] float32

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Mean BCE over the real hits of the batch; muon hits (link >= 0) weigh ``pos_weight``."""
        mask = batch["hit_mask"]
        target = (batch["link"] >= 0).float()  # [B, L]
        weight = torch.where(target > 0, self.pos_weight, 1.0) * mask  # [B, L]
        per = F.binary_cross_entropy_with_logits(out.float(), target, reduction="none")
        return (per * weight).sum() / mask.sum().clamp_min(1)

    def scores(self, out: Tensor) -> Tensor:
        """Logits [B, L] → scores in [0, 1] (float32)."""
        return torch.sigmoid(out.float())

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups by the regression's rule (:meth:`MuonRegressor.param_groups`)."""
        return MuonRegressor.param_groups(self, weight_decay)  # type: ignore[arg-type]


def build_hit_filter(cfg: TrainConfig, hit_fields: list[str]) -> HitFilter:
    """The hit filter a config describes (inputs: ``hit_fields``; ``frame_fields`` is empty for this task)."""
    encoder = HitEncoder(len(hit_fields), cfg.dim, cfg.encoder_layers, cfg.heads, cfg.dropout,
                         attention_spec(cfg, hit_fields))
    return HitFilter(encoder, cfg.dim, cfg.pos_weight, cfg.dropout)
