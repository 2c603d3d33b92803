"""The hit encoder: an input net, then a small pre-LN transformer over the hits of one event.

Attention is ``F.scaled_dot_product_attention`` with the padding mask as a boolean key mask, so
padded hits neither attend nor are attended to (the flash / memory-efficient kernels pick it up on
GPU). With ``attention.kind: window`` each hit attends only within its block of hits along a sort key
(:mod:`.attention`; no extra parameters, so a checkpoint loads with either kind). Pre-LN blocks (LayerNorm before attention and MLP, residual around both) train stably without
a warm-up dance at this size.

Ordered bottom-up (attention → block → encoder → regressor → :func:`build_model`). ``build_model`` is
the composer: it imports the task (:mod:`.task`) in one direction, and both import their shared
layers from :mod:`.layers`, so no component imports the composer back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..muon_frame import per_object_fields
from .attention import AttentionSpec, WindowLayout, block_attention, layouts
from .layers import Dense, float32_region
from .task import WeightedPoolingRegression

if TYPE_CHECKING:
    from .config import TrainConfig


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, key_mask: Tensor, layout: WindowLayout | None = None) -> Tensor:
        B, L, D = x.shape
        if layout is not None:  # windowed attention (pipeline.train.attention): blocks of the sorted hits
            xs = layout.gather(x)  # [B, Lp, D]
            qkv = self.qkv(xs).view(B, xs.shape[1], 3, self.heads, D // self.heads)
            y = block_attention(qkv, layout, self.dropout if self.training else 0.0)  # [B, Lp, D]
            return self.proj(layout.scatter(y))
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each [B, H, L, Dh]
        attn_mask = key_mask[:, None, None, :]  # [B, 1, 1, L], True = may be attended to
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # [B, H, L, Dh]
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, key_mask: Tensor, layout: WindowLayout | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), key_mask, layout)
        return x + self.mlp(self.ln2(x))


class HitEncoder(nn.Module):
    """hits [B, L, F] + hit_mask [B, L] → encoded hits [B, L, D]."""

    def __init__(self, num_hit_fields: int, dim: int, layers: int, heads: int, dropout: float,
                 attention: AttentionSpec | None = None) -> None:
        super().__init__()
        self.attention = attention or AttentionSpec()  # full attention unless the config asks for windows
        self.input_net = Dense(num_hit_fields, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, hits: Tensor, hit_mask: Tensor) -> Tensor:
        # An event without hits (convert --keep-empty-events) would give a row of -inf scores and NaN;
        # letting such rows see their first (zero) padding slot keeps them finite. They carry no muon loss.
        key_mask = hit_mask.clone()
        key_mask[:, 0] |= ~hit_mask.any(dim=1)
        with float32_region(hits):
            # The input net sees the hit inputs in float32 even under bf16 autocast: bf16 (8-bit
            # mantissa) would step a normalised mm coordinate at 15–20 mm, coarser than the bending.
            x = self.input_net(hits.to(torch.promote_types(hits.dtype, torch.float32)))  # [B, L, D], >= float32
        windows = layouts(self.attention, hits, hit_mask)  # None: full attention
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, None if windows is None else windows[i % 2])
        return self.ln_f(x)


class MuonRegressor(nn.Module):
    """Encoder + weighted-pooling task: a plain ``nn.Module``, usable without Lightning."""

    def __init__(self, encoder: HitEncoder, task: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.task = task

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """batch → raw network output [B, M, T] (scaled loss space)."""
        encoded = self.encoder(batch["hits"], batch["hit_mask"])  # [B, L, D]
        return self.task(batch["hits"], encoded, batch["hit_mask"], batch["link"], batch["muon_mask"])

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups ``[decay, no decay]``, after nanoGPT's ``configure_optimizers``.

        Rule: a parameter decays iff it has >= 2 dimensions (the weight matrices of the linear layers,
        attention included) and is not an ``nn.Embedding`` weight. Everything 1-D (biases, LayerNorm
        gains and shifts) and every embedding table (here the task's ``slot_embedding``, one learned
        vector per muon slot) gets weight decay 0. nanoGPT today decays iff ``p.dim() >= 2``, which would
        decay the embedding; its earlier version (from minGPT) kept ``nn.Embedding`` out, as here.
        Parameters keep their ``parameters()`` order within each group.
        """
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.parameters():
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]



def build_model(cfg: TrainConfig, hit_fields: list[str], muon_fields: list[str], centres: list[float] | None = None,
                scales: list[float] | None = None) -> MuonRegressor:
    """The model a config describes.

    The input width is ``len(hit_fields) + len(cfg.frame_fields)`` (22 in v1, 23 with eta, plus the
    muon-frame inputs): the loader appends the frame inputs after the dataset's.
    """
    width = len(hit_fields) + len(cfg.frame_fields)
    per_object = set(per_object_fields())
    object_inputs = [len(hit_fields) + i for i, name in enumerate(cfg.frame_fields) if name in per_object]
    encoder = HitEncoder(width, cfg.dim, cfg.encoder_layers, cfg.heads, cfg.dropout, attention_spec(cfg, hit_fields))
    per_object_names = [cfg.frame_fields[i - len(hit_fields)] for i in object_inputs]
    curvature = per_object_names.index("frame_curvature") if cfg.curvature_ratio else None
    task = WeightedPoolingRegression(width, cfg.dim, cfg.fields, muon_fields, object_inputs=object_inputs,
                                     loss_beta=cfg.loss_beta, uncertainty=cfg.uncertainty,
                                     inverse_fields=cfg.inverse_fields, signed_curvature=cfg.signed_curvature,
                                     centres=centres, scales=scales, max_muons=cfg.data.max_muons,
                                     num_layers=cfg.regression_layers, dropout=cfg.dropout,
                                     weighting=cfg.hit_weighting, curvature_column=curvature)
    return MuonRegressor(encoder, task)


def attention_spec(cfg: TrainConfig, hit_fields: list[str]) -> AttentionSpec:
    """The encoder's attention as ``cfg.attention`` describes it; the sort field is a column of the inputs."""
    a = cfg.attention
    return AttentionSpec(a.kind, a.window, hit_fields.index(a.sort_key) if a.kind == "window" else 0)
