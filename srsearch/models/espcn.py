"""ESPCN (Shi et al., CVPR 2016): two feature convs and a sub-pixel conv, all at LR resolution.

The `espcn` preset adds the global skip of the input (`LRSkip`, each LR pixel repeated s*s
times before the shuffle) that ECBSR and the searched nets have; `espcn-paper` is without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from srsearch.models._layers import LRSkip, check_scale, get_act_layer
from srsearch.models._registry import config_of, register, register_preset


@dataclass(frozen=True)
class ESPCNConfig:
    scale: int = 2
    features: tuple[int, int] = (64, 32)  # widths of the 5x5 and 3x3 feature layers
    act: str = "tanh"  # the paper's choice
    skip: bool = False  # add the repeated-input global skip (LRSkip) before the shuffle

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if len(self.features) != 2 or min(self.features) < 1:
            raise ValueError(f"ESPCN features must be two positive widths, got {self.features}")


class ESPCN(nn.Module):
    def __init__(self, cfg: ESPCNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f1, f2 = cfg.features
        s = cfg.scale
        self.body = nn.Sequential(
            nn.Conv2d(3, f1, 5, padding=2),
            get_act_layer(cfg.act, f1),
            nn.Conv2d(f1, f2, 3, padding=1),
            get_act_layer(cfg.act, f2),
            nn.Conv2d(f2, 3 * s * s, 3, padding=1),
        )
        self.skip = LRSkip(s) if cfg.skip else None
        self.shuffle = nn.PixelShuffle(s)

    def config(self) -> dict:
        return config_of(self.cfg, "espcn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)  # (B, 3*s*s, h, w)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.shuffle(y)  # -> (B, 3, h*s, w*s)


register("espcn", ESPCNConfig, ESPCN)
# The paper starts at 1e-2; at 3000 steps on builtin, 5e-3 gave +0.82 dB over bicubic on held-out
# photos where 1e-3 gave +0.60 (1e-2 trained worse: L1 0.031 vs 0.022 at step 1000; batch 48
# gave +0.87 at 3x the time; ReLU instead of tanh gave +0.37). The global skip (the same
# repeated-input 1x1 conv every other model here has) took that to +1.01 dB, for a 1x1 conv
# 3 -> 3*s*s at LR (docs/baselines.md); {"family": "espcn", "skip": false} is the paper's net.
register_preset("espcn", {"family": "espcn", "skip": True}, lr=5e-3)
register_preset("espcn-paper", {"family": "espcn", "skip": False}, lr=5e-3)
