"""Layers shared by the hand-designed models and the supernet (no registry imports here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LRSkip(nn.Module):
    """Global skip: each LR channel repeated s*s times, i.e. nearest-neighbour upsampling once
    pixel-shuffled.  # (B, 3, h, w) -> (B, 3*s*s, h, w), channel c*s*s + k = x[:, c]

    Written as a fixed 0/1 1x1 conv, which equals ``x.repeat_interleave(s*s, dim=1)`` exactly:
    LiteRT lowers repeat_interleave to BROADCAST_TO, which leaves the XNNPACK delegate and
    costs tens of ms at 640x360, while the 1x1 conv stays delegated (docs/search_space.md).
    The weight is a non-persistent buffer: not learned, not in the state dict.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        weight = torch.eye(3).repeat_interleave(scale * scale, dim=0)[:, :, None, None]
        self.register_buffer("weight", weight, persistent=False)  # (3*s*s, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
