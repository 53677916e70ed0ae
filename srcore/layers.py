"""Layers shared by the hand-designed models and the supernet (no registry imports here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SKIPS: tuple[str, ...] = ("nearest", "bicubic")


def skip_kernel(mode: str, scale: int) -> torch.Tensor:
    """The fixed (3*s*s, 3, k, k) conv weight whose output, pixel-shuffled, is ``mode``
    upsampling of the input by ``scale`` (``F.interpolate``, ``align_corners=False``) away from
    the border: k = 1 for "nearest" (each channel repeated s*s times), 5 for "bicubic" (its
    taps reach two LR pixels either side at every scale). Built from ``F.interpolate``'s
    response to one impulse per kernel tap, so it is torch's bicubic (a = -0.75) exactly."""
    if mode not in SKIPS:
        raise ValueError(f"skip {mode!r}: choose one of {SKIPS}")
    s2 = scale * scale
    if mode == "nearest":
        return torch.eye(3).repeat_interleave(s2, dim=0)[:, :, None, None]
    k, r = 5, 2
    n = 2 * k + 1
    impulses = torch.zeros(k * k, 1, n, n, dtype=torch.float64)
    for t in range(k * k):
        impulses[t, 0, k + t // k - r, k + t % k - r] = 1.0
    up = F.interpolate(impulses, scale_factor=scale, mode=mode, align_corners=False)
    # output sub-pixel (i, j) of LR pixel (k, k) takes tap t from LR pixel (k, k) + offset(t)
    taps = up[:, 0, k * scale:(k + 1) * scale, k * scale:(k + 1) * scale]  # (k*k, s, s)
    phase = taps.reshape(k, k, s2).permute(2, 0, 1)  # (s*s, k, k), phase i*s + j
    w = torch.zeros(3 * s2, 3, k, k, dtype=torch.float64)
    for c in range(3):
        w[c * s2:(c + 1) * s2, c] = phase
    return w.float()


class LRSkip(nn.Module):
    """Global skip: LR input -> (B, 3*s*s, h, w), whose pixel shuffle is the input upsampled
    by ``scale`` (channel c*s*s + i*s + j holds sub-pixel (i, j) of colour c).

    ``mode`` "nearest" (the default; ECBSR's) repeats each channel s*s times. It is written as
    a fixed 0/1 1x1 conv, which equals ``x.repeat_interleave(s*s, dim=1)`` exactly: LiteRT
    lowers repeat_interleave to BROADCAST_TO, which leaves the XNNPACK delegate and costs tens
    of ms at 640x360, while the 1x1 conv stays delegated (docs/search_space.md). "bicubic" is a
    fixed 5x5 conv (`skip_kernel`): the net then learns the residual over bicubic upsampling
    rather than over nearest, for one 3-input-channel conv more work. The weight is a
    non-persistent buffer: not learned, not in the state dict.
    """

    def __init__(self, scale: int, mode: str = "nearest") -> None:
        super().__init__()
        self.scale, self.mode = scale, mode
        weight = skip_kernel(mode, scale)
        self.pad = weight.shape[-1] // 2
        self.register_buffer("weight", weight, persistent=False)  # (3*s*s, 3, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=self.pad)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}"
