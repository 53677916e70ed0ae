"""Small shared pieces of the model files."""

from __future__ import annotations

import torch
from torch import nn

SCALES = (2, 3, 4)


def check_scale(scale: int) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")


def get_act_layer(name: str | None, channels: int = 1) -> nn.Module:
    """Activation by name, created fresh each call."""
    if name is None or name == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; choose relu, prelu, tanh or none")


def repeat_skip(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Cheap global skip: each input channel repeated s*s times, so that after PixelShuffle it is
    nearest-neighbour upsampling of the input.  # (B, C, H, W) -> (B, C*s*s, H, W)"""
    return x.repeat_interleave(scale * scale, dim=1)
