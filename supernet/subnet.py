"""A standalone subnet: plain ``nn.Conv2d`` layers built from an ``ArchConfig``.

What the supernet hands out (``SuperNet.get_active_subnet``) and what is trained further,
exported and shipped. No slicing or supernet code runs at inference; it is rebuilt from
``config()`` + ``state_dict()`` through the model registry (family ``"subnet"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from srcore.errors import UserError
from srcore.layers import LRSkip
from supernet.cells import KINDS
from supernet.cells.base import Conv3x3, activation, plain_conv3x3
from supernet.space import ArchConfig


@dataclass(frozen=True)
class SubNetConfig:
    """Registry form of a subnet config, ``{"family": "subnet", "scale", "arch"}`` minus family."""

    arch: ArchConfig
    scale: int | None = None  # every model config carries its scale; must equal arch.scale

    def __post_init__(self) -> None:
        if isinstance(self.arch, Mapping):
            object.__setattr__(self, "arch", ArchConfig.from_dict(self.arch))
        if not isinstance(self.arch, ArchConfig):
            raise UserError(f"subnet config arch is {self.arch!r}; it must be an architecture")
        if self.scale is not None and self.scale != self.arch.scale:
            raise UserError(
                f"subnet config has scale {self.scale} but its arch is "
                f"x{self.arch.scale}; make them agree"
            )


class SubNet(nn.Module):
    """Head conv + ReLU, cells, tail conv, + LR skip, pixel shuffle. Input (B, 3, h, w) in
    [0, 1] -> (B, 3, h*s, w*s), unclamped.

    ``conv3x3`` builds every 3x3 conv (head, cells, tail); 1x1 convs stay plain. The default is
    the plain form that the supernet hands out and that is exported.
    """

    def __init__(self, arch: ArchConfig, conv3x3: Conv3x3 = plain_conv3x3) -> None:
        super().__init__()
        self.arch = arch
        s = arch.scale
        act = activation(arch.act)
        self.head = conv3x3(3, arch.head_width)
        self.head_act = act(arch.head_width)
        self.cells = nn.ModuleList(
            KINDS[c.block].plain(cin, c, conv3x3, act)
            for cin, c in zip(arch.in_widths(), arch.cells, strict=True)
        )
        self.tail = conv3x3(arch.cells[-1].width, 3 * s * s)
        self.skip = LRSkip(s, arch.skip)
        self.upsample = nn.PixelShuffle(s)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SubNetConfig | ArchConfig) -> SubNet:
        """Rebuild from ``config()`` (the ``"family"`` key may be present or not)."""
        if isinstance(config, ArchConfig | SubNetConfig):
            return cls(config if isinstance(config, ArchConfig) else config.arch)
        cfg = dict(config)
        family = cfg.pop("family", "subnet")
        if family != "subnet" or not {"arch"} <= set(cfg) <= {"arch", "scale"}:
            raise UserError(
                f"subnet config must be {{'family': 'subnet', 'scale': s, 'arch': {{...}}}}; "
                f"got keys {sorted(config)} with family {family!r}"
            )
        return cls(SubNetConfig(cfg["arch"], cfg.get("scale")).arch)

    def config(self) -> dict[str, Any]:
        return {"family": "subnet", "scale": self.arch.scale, "arch": self.arch.to_dict()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head_act(self.head(x))
        for cell in self.cells:
            feat = cell(feat)
        return self.upsample(self.tail(feat) + self.skip(x))  # (B, 3*s*s, h, w) -> (B, 3, hs, ws)
