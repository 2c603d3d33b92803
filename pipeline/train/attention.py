"""Windowed self-attention over a sort key: attention that scales linearly with the hits of an event.

Full attention (``attention.kind: full``, the default) scores every pair of hits of an event: memory and
time grow as L² (10,000 hits: 10⁸ scores per head and layer). ``attention.kind: window`` sorts the hits of
each event by one input field (``attention.sort_key``, e.g. ``phi``) and lets each hit attend only to the
hits of its block of ``attention.window`` consecutive hits in that order::

    sorted hits    h0 h1 h2 h3 | h4 h5 h6 h7 | h8 h9            (window 4; the last block half empty)
    odd layers     h2 h3 h4 h5 | h6 h7 h8 h9 | h0 h1            (rolled by window/2, cyclically)

Even layers use the blocks of the sorted order; odd layers roll the event's hits by ``window // 2``
*within the event* (cyclically over its real hits), so information crosses block borders from one layer
to the next (as in Swin's shifted windows), and the first and last hits in the sort order (φ ≈ −π and
+π, neighbours on the detector) share a block. An event with at most ``window`` hits stays in one block
in every layer: its attention is exactly full attention. Padding sits after the real hits, never in a
block with them unless the block has room, and is masked as a key.

Cost per event and layer: ``ceil(L / w) · w²`` scores instead of ``L²``. Normalising a field is an
increasing affine map (std > 0), so the normalised column sorts as the raw field does: the encoder
sorts on its own inputs and needs no raw values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Attention kinds of ``attention.kind``.
KINDS = ("full", "window")


@dataclass(frozen=True)
class AttentionSpec:
    """How the encoder attends: ``kind`` (``full`` or ``window``), the block size ``window`` (hits) and
    the column of the sort field in the encoder's input (``key_index``; unused for ``full``)."""

    kind: str = "full"
    window: int = 256
    key_index: int = 0


@dataclass
class WindowLayout:
    """Where each hit sits in the windowed sequence of one layer.

    ``index`` [B, Lp] int64: for each position of the windowed sequence (``Lp`` = L rounded up to a
    multiple of ``window``), the hit it holds (``L`` = an empty slot); ``inverse`` [B, L] int64: for each
    hit, its position; ``key_mask`` [B·Lp/w, 1, 1, w] bool: keys that may be attended to in each block
    (every block has at least one, so no softmax row is empty).
    """

    index: Tensor
    inverse: Tensor
    key_mask: Tensor
    window: int

    def gather(self, x: Tensor) -> Tensor:
        """x [B, L, D] (hit order) → [B, Lp, D] (windowed order; empty slots 0)."""
        padded = F.pad(x, (0, 0, 0, 1))  # [B, L + 1, D]: row L is the empty slot
        return padded.gather(1, self.index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def scatter(self, y: Tensor) -> Tensor:
        """y [B, Lp, D] (windowed order) → [B, L, D] (hit order)."""
        return y.gather(1, self.inverse.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


def make_layout(key: Tensor, hit_mask: Tensor, window: int, shift: int) -> WindowLayout:
    """The layout of one layer: hits sorted by ``key`` [B, L] (real hits first), rolled by ``shift``
    positions cyclically within each event's real hits, cut into blocks of ``window``."""
    B, L = key.shape
    device = key.device
    n = hit_mask.sum(1, keepdim=True)  # [B, 1] real hits per event
    order = torch.argsort(key.float().masked_fill(~hit_mask, float("inf")), dim=1, stable=True)  # [B, L]
    Lp = max(-(-L // window), 1) * window
    p = torch.arange(Lp, device=device).unsqueeze(0).expand(B, Lp)  # [B, Lp]
    rank = torch.where(p < n, (p + shift) % n.clamp_min(1), p)  # [B, Lp] rank in the sorted order
    index = torch.where(rank < L, order.gather(1, rank.clamp(max=L - 1)), torch.full_like(rank, L))
    inverse = torch.zeros(B, L + 1, dtype=torch.long, device=device)
    inverse.scatter_(1, index, p)  # slots of empty positions all land in column L, which is dropped
    valid = F.pad(hit_mask, (0, 1)).gather(1, index).view(B, Lp // window, window)  # [B, nb, w]
    first = torch.arange(window, device=device) == 0
    valid = valid | (~valid.any(-1, keepdim=True) & first)  # an all-empty block sees its first slot
    return WindowLayout(index, inverse[:, :L], valid.reshape(-1, 1, 1, window), window)


def layouts(spec: AttentionSpec, hits: Tensor, hit_mask: Tensor) -> tuple[WindowLayout, WindowLayout] | None:
    """The two layouts of windowed attention (unrolled, rolled by ``window // 2``); None for ``full``."""
    if spec.kind != "window":
        return None
    key = hits[..., spec.key_index]  # [B, L]
    return (make_layout(key, hit_mask, spec.window, 0), make_layout(key, hit_mask, spec.window, spec.window // 2))


def block_attention(qkv: Tensor, layout: WindowLayout, dropout_p: float = 0.0) -> Tensor:
    """qkv [B, Lp, 3, H, Dh] in windowed order → attention within each block, [B, Lp, H·Dh]."""
    B, Lp, _, H, Dh = qkv.shape
    w = layout.window
    nb = Lp // w
    q, k, v = qkv.view(B * nb, w, 3, H, Dh).permute(2, 0, 3, 1, 4)  # each [B·nb, H, w, Dh]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask, dropout_p=dropout_p)  # [B·nb, H, w, Dh]
    return y.transpose(1, 2).reshape(B, Lp, H * Dh)
