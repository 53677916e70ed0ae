"""Subnets of the supernet (stage 1), registered so that searched models load like any other.

A searched architecture trains in one of three forms (config key ``rep``); all three export as
the same plain ``SubNet``, so the latency table prices them alike:

- ``"none"``: plain 3x3 convs, what the supernet hands out;
- ``"repvgg"``: each 3x3 conv is 3x3 + 1x1 (+ identity when in == out), summed (RepVGG, Ding et
  al. 2021, without batch norm: SR nets train without it);
- ``"ecb"``: each 3x3 conv is ECBSR's edge-oriented block (3x3, 1x1-expand + 3x3, 1x1 + Sobel-x,
  Sobel-y and Laplacian, + identity), the block ECBSR trains with.

Every branch is linear, so ``RepSubNet.collapse()`` folds each block into one 3x3 conv, exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from srsearch.common.errors import UserError
from srsearch.models._registry import register
from srsearch.models.ecbsr import ECB
from supernet.space import ArchConfig
from supernet.subnet import Conv3x3, SubNet, SubNetConfig

REP_KINDS: tuple[str, ...] = ("none", "repvgg", "ecb")


def _identity_kernel(cin: int, cout: int, like: torch.Tensor) -> torch.Tensor:
    """(cout, cin, 3, 3) kernel of the identity map (needs cin == cout)."""
    k = torch.zeros(cout, cin, 3, 3, dtype=like.dtype, device=like.device)
    idx = torch.arange(cout)
    k[idx, idx, 1, 1] = 1.0
    return k


class RepVGGConv(nn.Module):
    """3x3 + 1x1 (+ identity when ``cin == cout``): one 3x3 conv at inference."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1x1 = nn.Conv2d(cin, cout, 1)
        self.with_idt = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x) + self.conv1x1(x)
        return y + x if self.with_idt else y

    def rep_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.conv3x3.weight + F.pad(self.conv1x1.weight, (1, 1, 1, 1))
        if self.with_idt:
            k = k + _identity_kernel(self.conv1x1.in_channels, self.conv1x1.out_channels, k)
        return k, self.conv3x3.bias + self.conv1x1.bias

    @torch.no_grad()
    def load_plain(self, conv: nn.Conv2d) -> None:
        """Start as exactly ``conv``: the extra branches at zero."""
        self.conv1x1.weight.zero_()
        self.conv1x1.bias.zero_()
        k = conv.weight.clone()
        if self.with_idt:
            k -= _identity_kernel(conv.in_channels, conv.out_channels, k)
        self.conv3x3.weight.copy_(k)
        self.conv3x3.bias.copy_(conv.bias)


class ECBConv(ECB):
    """ECBSR's block with no activation of its own (the subnet applies its ReLUs), its branches
    started "damped" (`srsearch.models.ecbsr.BRANCH_INITS`): with the paper's init and ReLU the
    net falls to its LR skip within ten steps at lr 2e-3 (docs/search.md)."""

    def __init__(self, cin: int, cout: int, branch_init: str = "damped") -> None:
        super().__init__(cin, cout, None, branch_init=branch_init)

    @torch.no_grad()
    def load_plain(self, conv: nn.Conv2d) -> None:
        """Start as exactly ``conv``: every branch's last stage at zero, so its output is zero
        whatever its first stage does (which still trains from its random start)."""
        for branch in self.branches:
            if branch.kind == "conv1x1-conv3x3":
                branch.conv1.weight.zero_()
                branch.conv1.bias.zero_()
            else:
                branch.scale.zero_()
                branch.bias.zero_()
        k = conv.weight.clone()
        if self.with_idt:
            k -= _identity_kernel(self.cin, self.cout, k)
        self.conv3x3.weight.copy_(k)
        self.conv3x3.bias.copy_(conv.bias)


_REP_CONVS: dict[str, Conv3x3] = {"repvgg": RepVGGConv, "ecb": ECBConv}


@dataclass(frozen=True)
class SubNetModelConfig:
    """Registry form ``{"family": "subnet", "scale", "arch", "rep"}``; ``rep`` (default
    ``"none"``) is the training-time form, see the module docstring."""

    arch: ArchConfig
    scale: int | None = None
    rep: str = "none"

    def __post_init__(self) -> None:
        checked = SubNetConfig(self.arch, self.scale)  # parses and checks arch and scale
        object.__setattr__(self, "arch", checked.arch)
        if self.rep not in REP_KINDS:
            raise UserError(
                f"subnet config has rep {self.rep!r}; choose one of {', '.join(REP_KINDS)}"
            )


class RepSubNet(SubNet):
    """A subnet whose 3x3 convs train as re-parameterisable blocks; ``collapse()`` gives the
    plain ``SubNet`` (same outputs up to float rounding) that is exported and timed."""

    def __init__(self, arch: ArchConfig, rep: str) -> None:
        if rep not in _REP_CONVS:
            raise UserError(f"rep {rep!r}: choose one of {', '.join(_REP_CONVS)}")
        super().__init__(arch, _REP_CONVS[rep])
        self.rep = rep
        # Start as the plain net's default initialisation (extra branches' last stages at
        # zero), so that a from-scratch run starts where the plain net starts. Measured on
        # sun80+t91 (docs/search.md, "Re-parameterisable blocks" and session 12): with the
        # subnet's ReLUs, RepVGG collapses to the LR skip at lr 2e-3; ECB did too until its
        # branches started damped (ECBConv), and now trains ahead of the plain net.
        self._load_plain(SubNet(arch))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rep": self.rep}

    def _rep_modules(self) -> dict[str, nn.Module]:
        return {n: m for n, m in self.named_modules() if isinstance(m, RepVGGConv | ECBConv)}

    @torch.no_grad()
    def collapse(self) -> SubNet:
        reps = self._rep_modules()
        plain = SubNet(self.arch).to(next(self.parameters()))
        state = {**plain.state_dict(), **_outside(self.state_dict(), reps)}
        for name, block in reps.items():
            k, b = block.rep_params()
            state[f"{name}.weight"], state[f"{name}.bias"] = k, b
        plain.load_state_dict(state)
        return plain.train(self.training)

    @classmethod
    @torch.no_grad()
    def from_plain(cls, plain: SubNet, rep: str) -> RepSubNet:
        """The training form of ``plain`` that computes exactly what ``plain`` does (inherited
        weights go on training with the extra branches)."""
        net = cls(plain.arch, rep).to(next(plain.parameters()))
        net._load_plain(plain)
        return net

    @torch.no_grad()
    def _load_plain(self, plain: SubNet) -> None:
        reps = self._rep_modules()
        state = self.state_dict()
        state.update({k: v.to(state[k]) for k, v in _outside(plain.state_dict(), reps).items()})
        self.load_state_dict(state)
        modules = dict(plain.named_modules())
        for name, block in reps.items():
            block.load_plain(modules[name])


def _outside(state: Mapping[str, torch.Tensor], reps: Mapping[str, nn.Module]) -> dict:
    """The entries of ``state`` that belong to no block in ``reps``: what the plain and the
    block form share by name (1x1 convs of wide cells, the LR skip)."""
    return {k: v for k, v in state.items() if not any(k.startswith(f"{n}.") for n in reps)}


def training_form(plain: SubNet, rep: str) -> SubNet:
    """``plain`` to train in form ``rep``: itself for "none", else the block form computing
    exactly what it does (`RepSubNet.from_plain`); `srsearch.models.inference_form` undoes it."""
    return plain if rep == "none" else RepSubNet.from_plain(plain, rep)


def build_subnet(cfg: SubNetModelConfig) -> SubNet:
    return SubNet(cfg.arch) if cfg.rep == "none" else RepSubNet(cfg.arch, cfg.rep)


def subnet_config(arch: ArchConfig | Mapping[str, Any], rep: str = "none") -> dict[str, Any]:
    """The model config dict of ``arch`` in training form ``rep``."""
    arch = arch if isinstance(arch, ArchConfig) else ArchConfig.from_dict(arch)
    out = {"family": "subnet", "scale": arch.scale, "arch": arch.to_dict()}
    return out if rep == "none" else {**out, "rep": rep}


register("subnet", SubNetModelConfig, build_subnet)
