"""FSRCNN (Dong et al., ECCV 2016): shrink, map, expand at LR; a 9x9 transposed conv upsamples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from srsearch.models._layers import check_scale
from srsearch.models._registry import config_of, register, register_preset


@dataclass(frozen=True)
class FSRCNNConfig:
    scale: int = 2
    d: int = 56  # feature width
    s: int = 12  # shrunk width
    m: int = 4  # mapping layers

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if min(self.d, self.s) < 1 or self.m < 0:
            raise ValueError(f"FSRCNN needs d, s >= 1 and m >= 0, got {self}")


class FSRCNN(nn.Module):
    def __init__(self, cfg: FSRCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, s, m = cfg.d, cfg.s, cfg.m
        layers: list[nn.Module] = [nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d)]
        layers += [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        sc = cfg.scale
        # output = (h - 1) * sc - 2 * 4 + 9 + (sc - 1) = h * sc
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=sc, padding=4, output_padding=sc - 1)
        nn.init.normal_(self.deconv.weight, std=0.001)
        nn.init.zeros_(self.deconv.bias)

    def config(self) -> dict:
        return config_of(self.cfg, "fsrcnn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.body(x))


register("fsrcnn", FSRCNNConfig, FSRCNN)
register_preset("fsrcnn", {"family": "fsrcnn"})
register_preset("fsrcnn-s", {"family": "fsrcnn", "d": 32, "s": 5, "m": 1})
