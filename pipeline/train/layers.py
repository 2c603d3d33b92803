"""Leaf layers shared by the encoder (:mod:`.model`) and the task (:mod:`.task`).

Imports torch only: the components import it, it imports none of them (so the composer,
:func:`pipeline.train.model.build_model`, can import the task in one direction).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Dense(nn.Module):
    """Linear → GELU → Linear: the input net that lifts hit fields (or encoded hits) to ``dim``."""

    def __init__(self, input_size: int, output_size: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * output_size
        self.net = nn.Sequential(nn.Linear(input_size, hidden), nn.GELU(), nn.Linear(hidden, output_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def float32_region(like: Tensor) -> Any:
    """A context in which autocast is off (ops run in the dtype of their float32 inputs)."""
    return torch.autocast(device_type=like.device.type, enabled=False)
