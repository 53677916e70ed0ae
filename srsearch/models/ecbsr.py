"""ECBSR-style plain nets (Zhang et al., ACM MM 2021) and their collapsed inference form.

Training uses edge-oriented convolution blocks (ECB): a 3x3 conv, a 1x1-expand + 3x3 branch, and
1x1 + fixed Sobel-x / Sobel-y / Laplacian branches (+ identity), summed. All branches are linear, so
for inference each ECB collapses exactly into one 3x3 conv, and the net into ``PlainSR``: M+2 plain
3x3 convs with an activation, the repeated-input skip and a pixel shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srsearch.models._layers import LRSkip, check_scale, get_act_layer
from srsearch.models._registry import config_of, register, register_preset

_MASKS = {
    "sobelx": [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
    "sobely": [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],
    "laplacian": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
}


# How each branch's first stage (the 1x1 conv) starts. "paper": torch's default init, as ECBSR's
# code has it. "damped": its weights x DAMPED_W0 and its bias fixed at zero. Measured (docs/
# search.md, session 12): under Adam every weight and bias moves by about lr per step, and the
# collapsed kernel and bias sum the branches' (the 1x1 bias over mid x 9 taps), so the block's
# bias moved several times faster than a plain conv's and, with ReLU at lr 2e-3, every ReLU
# after the head died within ten steps (the net fell to its LR skip). The conv0 bias adds
# nothing the branch's own bias cannot, except a one-pixel border.
BRANCH_INITS: tuple[str, ...] = ("paper", "damped")
DAMPED_W0 = 0.25


def _pad_with_bias(y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Pad a 1x1-conv output by one pixel filled with that conv's bias (not zero), which is what
    the collapsed 3x3 conv sees when it zero-pads its input."""
    b = bias.view(1, -1, 1, 1)
    y = F.pad(y, (1, 1, 1, 1), "constant", 0.0)
    y[:, :, 0:1, :] = b
    y[:, :, -1:, :] = b
    y[:, :, :, 0:1] = b
    y[:, :, :, -1:] = b
    return y


class SeqConv3x3(nn.Module):
    """1x1 conv followed by a 3x3 conv (learned, or a fixed edge mask with learned scale)."""

    def __init__(self, kind: str, cin: int, cout: int, depth_multiplier: float = 2.0,
                 init: str = "paper") -> None:
        super().__init__()
        if init not in BRANCH_INITS:
            raise ValueError(f"unknown branch init {init!r}; choose one of {list(BRANCH_INITS)}")
        self.kind = kind
        self.cout = cout
        if kind == "conv1x1-conv3x3":
            mid = int(cout * depth_multiplier)
            self.conv0 = nn.Conv2d(cin, mid, 1)
            self.conv1 = nn.Conv2d(mid, cout, 3)
        else:
            self.conv0 = nn.Conv2d(cin, cout, 1)
            self.scale = nn.Parameter(torch.randn(cout, 1, 1, 1) * 1e-3)
            self.bias = nn.Parameter(torch.randn(cout) * 1e-3)
            mask = torch.tensor(_MASKS[kind]).expand(cout, 1, 3, 3).clone()
            self.register_buffer("mask", mask)
        if init == "damped":
            with torch.no_grad():
                self.conv0.weight.mul_(DAMPED_W0)
                self.conv0.bias.zero_()
            self.conv0.bias.requires_grad_(False)

    def _k1_b1(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 stage as a dense (cout, mid, 3, 3) kernel and bias."""
        if self.kind == "conv1x1-conv3x3":
            return self.conv1.weight, self.conv1.bias
        k1 = torch.zeros(
            self.cout, self.cout, 3, 3, dtype=self.scale.dtype, device=self.mask.device
        )
        idx = torch.arange(self.cout)
        k1[idx, idx] = (self.scale * self.mask)[:, 0]
        return k1, self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _pad_with_bias(self.conv0(x), self.conv0.bias)
        if self.kind == "conv1x1-conv3x3":
            return self.conv1(y)
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=self.cout)

    def rep_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        k0, b0 = self.conv0.weight, self.conv0.bias
        k1, b1 = self._k1_b1()
        k = F.conv2d(k1, k0.permute(1, 0, 2, 3))  # (cout, cin, 3, 3)
        ones = torch.ones(1, k0.shape[0], 3, 3, dtype=k0.dtype, device=k0.device)
        b = F.conv2d(ones * b0.view(1, -1, 1, 1), k1)
        return k, b.view(-1) + b1


class ECB(nn.Module):
    """Edge-oriented convolution block; collapses into one 3x3 conv with ``rep_params``."""

    def __init__(self, cin: int, cout: int, act: str | None, depth_multiplier: float = 2.0,
                 branch_init: str = "paper") -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.with_idt = cin == cout
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.branches = nn.ModuleList(
            SeqConv3x3(kind, cin, cout, depth_multiplier, branch_init)
            for kind in ("conv1x1-conv3x3", "sobelx", "sobely", "laplacian")
        )
        self.act = get_act_layer(act, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One 3x3 conv with the kernel the branches sum to: the same function of the same
        # parameters as running each branch (``forward_branches``), so the same loss and
        # gradients, at the cost of one conv instead of about four (online
        # re-parameterisation). Gradients reach every branch through ``rep_params``.
        k, b = self.rep_params()
        return self.act(F.conv2d(x, k, b, padding=1))

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The block as its paper writes it: each branch run on ``x``, then summed."""
        y = self.conv3x3(x) + sum(b(x) for b in self.branches)
        if self.with_idt:
            y = y + x
        return self.act(y)

    def rep_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = self.conv3x3.weight, self.conv3x3.bias
        for branch in self.branches:
            kb, bb = branch.rep_params()
            k, b = k + kb, b + bb
        if self.with_idt:
            idt = torch.zeros_like(k)
            idx = torch.arange(self.cout)
            idt[idx, idx, 1, 1] = 1.0
            k = k + idt
        return k, b


@dataclass(frozen=True)
class PlainSRConfig:
    """M+2 plain 3x3 convs: head (3->C), M body (C->C), tail (C->3*s*s); skip; pixel shuffle."""

    scale: int = 2
    m: int = 4
    channels: int = 16
    act: str = "relu"

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if self.m < 0 or self.channels < 1:
            raise ValueError(f"need m >= 0 and channels >= 1, got m={self.m} C={self.channels}")


@dataclass(frozen=True)
class ECBSRConfig(PlainSRConfig):
    depth_multiplier: float = 2.0
    branch_init: str = "paper"  # how the ECB branches start (BRANCH_INITS); export is the same

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.branch_init not in BRANCH_INITS:
            raise ValueError(f"ecbsr branch_init {self.branch_init!r}: choose one of "
                             f"{list(BRANCH_INITS)}")


class PlainSR(nn.Module):
    """The inference form: only Conv2d 3x3, activations, an add and a pixel shuffle."""

    def __init__(self, cfg: PlainSRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        s, c = cfg.scale, cfg.channels
        widths = [3] + [c] * (cfg.m + 1) + [3 * s * s]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, 3, padding=1))
            if i < len(widths) - 2:
                layers.append(get_act_layer(cfg.act, cout))
        self.body = nn.Sequential(*layers)
        self.skip = LRSkip(s)
        self.shuffle = nn.PixelShuffle(s)

    def config(self) -> dict:
        return config_of(self.cfg, "plainsr")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x) + self.skip(x))


class ECBSR(nn.Module):
    """Training form; ``collapse()`` returns the equivalent ``PlainSR``."""

    def __init__(self, cfg: ECBSRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        s, c = cfg.scale, cfg.channels
        widths = [3] + [c] * (cfg.m + 1) + [3 * s * s]
        n = len(widths) - 1
        self.blocks = nn.ModuleList(
            ECB(cin, cout, cfg.act if i < n - 1 else None, cfg.depth_multiplier,
                cfg.branch_init)
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        self.skip = LRSkip(s)
        self.shuffle = nn.PixelShuffle(s)

    def config(self) -> dict:
        return config_of(self.cfg, "ecbsr")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y)
        return self.shuffle(y + self.skip(x))

    @torch.no_grad()
    def collapse(self) -> PlainSR:
        cfg = self.cfg
        dtype = next(self.parameters()).dtype
        plain = PlainSR(PlainSRConfig(cfg.scale, cfg.m, cfg.channels, cfg.act)).to(dtype)
        convs = [m for m in plain.body if isinstance(m, nn.Conv2d)]
        acts = [m for m in plain.body if not isinstance(m, nn.Conv2d)]
        for block, conv in zip(self.blocks, convs, strict=True):
            k, b = block.rep_params()
            conv.weight.copy_(k)
            conv.bias.copy_(b)
        for block, act in zip(self.blocks[:-1], acts, strict=True):
            act.load_state_dict(block.act.state_dict())
        return plain.train(self.training)


register("plainsr", PlainSRConfig, PlainSR)
register("ecbsr", ECBSRConfig, ECBSR)
# The paper's PReLU (with ReLU the last activation can die: ecbsr-m4c16 at lr 1e-3 fell to
# nearest-neighbour upsampling within 500 steps). The paper's lr 5e-4 is for long schedules: at
# 1000 steps on builtin, ecbsr-m4c8 reached 32.60 dB on the val split (below bicubic's 32.92)
# at 5e-4, 33.83 at 2e-3 and 33.79 at 5e-3 (docs/baselines.md), so the presets use 2e-3.
for _m, _c in ((4, 8), (4, 16), (8, 16), (4, 32), (10, 32)):
    register_preset(
        f"ecbsr-m{_m}c{_c}", {"family": "ecbsr", "m": _m, "channels": _c, "act": "prelu"}, lr=2e-3
    )
