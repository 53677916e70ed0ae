"""Bicubic upsampling, coefficient for coefficient the one Pillow computes (Image.BICUBIC).

Pillow, like MATLAB's imresize, uses the cubic kernel with a = -0.5 and, at the image border, drops
the taps that fall outside and renormalises the rest. torch's own bicubic pads instead, which shifts
published PSNR figures, so this module applies Pillow's interpolation matrices, horizontal pass
first, and like Pillow on uint8 images it clips and rounds to 8 bits between the two passes:
out = Ry @ q(x @ Rx^T), q(t) = round(clip(t, 0, 1) * 255) / 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from srsearch.models._layers import check_scale
from srsearch.models._registry import config_of, register, register_preset


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0),
    )


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of Pillow's BICUBIC coefficients (Resample.c)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        taps = np.arange(xmin, xmax)
        w = _cubic((taps - center + 0.5) / filterscale)
        mat[xx, xmin:xmax] = w / w.sum()
    return mat


@dataclass(frozen=True)
class BicubicConfig:
    scale: int = 2

    def __post_init__(self) -> None:
        check_scale(self.scale)


class Bicubic(nn.Module):
    """Parameter-free bicubic upsampler, Pillow's border handling. (B,3,h,w) -> (B,3,sh,sw)"""

    def __init__(self, cfg: BicubicConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.scale = cfg.scale
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def config(self) -> dict:
        return config_of(self.cfg, "bicubic")

    def _matrices(self, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if (h, w) not in self._cache:
            ry = torch.from_numpy(resize_matrix(h, h * self.scale)).float()
            rx = torch.from_numpy(resize_matrix(w, w * self.scale)).float()
            self._cache[(h, w)] = (ry, rx)
        ry, rx = self._cache[(h, w)]
        return ry.to(like.device), rx.to(like.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ry, rx = self._matrices(x.shape[-2], x.shape[-1], x)
        horizontal = (x @ rx.T).clamp(0.0, 1.0).mul(255.0).round().div(255.0)
        return ry @ horizontal


register("bicubic", BicubicConfig, Bicubic)
register_preset("bicubic", {"family": "bicubic"})
