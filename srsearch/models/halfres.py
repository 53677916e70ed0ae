"""HalfResSR: a plain conv chain that runs at half the LR resolution (experimental, session 13).

    x (B,3,h,w) ─► space-to-depth 2 (fixed 2x2 stride-2 conv, 3 -> 12) ─► q (B,12,h/2,w/2)
    q ─► head 3x3 12->width, act ─► depth x (3x3 width->width, act) ─► tail 3x3 -> 3*(2s)^2 ─► (+)
    q ─► skip: fixed 3x3 conv 12 -> 3*(2s)^2 whose shuffle is bicubic x s of x ──────────────┘
      ─► PixelShuffle(2s) ─► (B,3,hs,ws)

Why: on the 2-core host XNNPACK runs a 3x3 conv of 32 channels on a quarter of the positions
at about 1.7x the MACs per millisecond of a 16-channel conv at LR resolution (docs/search.md,
"Session 13"), and each conv sees twice as far. Space-to-depth loses nothing (it is a
rearrangement); the skip is exactly torch's bicubic upsampling away from the border, computed
from the rearranged input (`skip_weight`), so the chain learns a residual as the searched nets
do. ``rep="ecb"`` trains every conv as an ECB block (damped start, ReLU inside) and
``collapse()`` returns the plain form that ships.

Inputs with an odd side are padded by one replicated row/column and the output cropped, so any
image can be scored; exported files have even static sides.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srsearch.models._layers import check_scale, get_act_layer
from srsearch.models._registry import config_of, register
from srsearch.models.ecbsr import ECB

REPS = ("none", "ecb")


@torch.fx.wrap
def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Pad an odd side by one replicated row/column (a leaf for torch.fx: the export traces
    even static sizes, where this is the identity)."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


@torch.fx.wrap
def _crop_to(y: torch.Tensor, x: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return y if y.shape[-2:] == (h * scale, w * scale) else y[..., : h * scale, : w * scale]


def s2d_weight(channels: int = 3, r: int = 2) -> torch.Tensor:
    """The fixed conv (kernel r, stride r) that is ``F.pixel_unshuffle(x, r)``."""
    w = torch.zeros(channels * r * r, channels, r, r)
    for c in range(channels):
        for i in range(r):
            for j in range(r):
                w[c * r * r + i * r + j, c, i, j] = 1.0
    return w


@functools.cache
def skip_weight(scale: int) -> torch.Tensor:
    """A 3x3 conv on ``pixel_unshuffle(x, 2)`` whose ``pixel_shuffle(., 2 * scale)`` is
    ``F.interpolate(x, scale_factor=scale, mode="bicubic")`` away from the border.

    Solved by least squares on random images (the map is linear and shift-equivariant on the
    half-resolution grid) and checked exact to 1e-6: a 3x3 support covers bicubic's four taps.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64)
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    target = F.pixel_unshuffle(up, 2 * scale)  # (B, 3*(2s)^2, 16, 16)
    cols = F.unfold(F.pixel_unshuffle(x, 2), 3, padding=1)  # (B, 108, 256)
    inner = torch.zeros(16, 16, dtype=torch.bool)
    inner[2:-2, 2:-2] = True
    inner = inner.flatten()
    a = cols[:, :, inner].permute(0, 2, 1).reshape(-1, cols.shape[1])
    b = target.flatten(2)[:, :, inner].permute(0, 2, 1).reshape(-1, target.shape[1])
    k = torch.linalg.lstsq(a, b).solution
    err = (a @ k - b).abs().max().item()
    if err > 1e-6:  # pragma: no cover - a property of bicubic, tested
        raise AssertionError(f"bicubic x{scale} is not a 3x3 conv at half resolution ({err})")
    return k.T.reshape(target.shape[1], 12, 3, 3).float().contiguous()


@dataclass(frozen=True)
class HalfResConfig:
    scale: int = 2
    width: int = 32
    depth: int = 6  # convs between the head and the tail
    act: str = "relu"
    rep: str = "none"  # training-time form: "none" or "ecb" (collapses to "none")
    lr_width: int = 0  # > 0: the "ushape" form (see UShapeSR)

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"halfres needs width >= 1 and depth >= 0, got {self.width}, "
                             f"{self.depth}")
        if self.rep not in REPS:
            raise ValueError(f"halfres rep must be one of {REPS}, got {self.rep!r}")
        get_act_layer(self.act)


class HalfResSR(nn.Module):
    def __init__(self, cfg: HalfResConfig) -> None:
        super().__init__()
        self.cfg = cfg
        out = 3 * (2 * cfg.scale) ** 2
        widths = [12] + [cfg.width] * (cfg.depth + 1) + [out]
        n = len(widths) - 1
        self.register_buffer("s2d", s2d_weight(), persistent=False)
        self.register_buffer("skip", skip_weight(cfg.scale).clone(), persistent=False)
        convs: list[nn.Module] = []
        acts: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            act = cfg.act if i < n - 1 else None
            if cfg.rep == "ecb":
                convs.append(ECB(cin, cout, act, branch_init="damped"))
                acts.append(nn.Identity())
            else:
                convs.append(nn.Conv2d(cin, cout, 3, padding=1))
                acts.append(get_act_layer(act, cout))
        self.convs = nn.ModuleList(convs)
        self.acts = nn.ModuleList(acts)
        self.shuffle = nn.PixelShuffle(2 * cfg.scale)

    def config(self) -> dict:
        return config_of(self.cfg, "halfres")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = _pad_even(x)
        q = F.conv2d(xp, self.s2d, stride=2)
        y = q
        for conv, act in zip(self.convs, self.acts, strict=True):
            y = act(conv(y))
        return _crop_to(self.shuffle(y + F.conv2d(q, self.skip, padding=1)), x, self.cfg.scale)

    @torch.no_grad()
    def collapse(self) -> HalfResSR:
        """The plain form (``rep="none"``) computing the same function; itself when plain."""
        if self.cfg.rep == "none":
            return self
        cfg = HalfResConfig(self.cfg.scale, self.cfg.width, self.cfg.depth, self.cfg.act,
                            lr_width=self.cfg.lr_width)
        dtype = next(self.parameters()).dtype
        plain = HalfResSR(cfg).to(dtype)
        for block, conv, act in zip(self.convs, plain.convs, plain.acts, strict=True):
            k, b = block.rep_params()
            conv.weight.copy_(k)
            conv.bias.copy_(b)
            act.load_state_dict(block.act.state_dict())
        return plain.train(self.training)


class UShapeSR(nn.Module):
    """LR head 3->lr_width, stride-2 conv down to width at half resolution, depth convs there,
    a conv up to 4*lr_width + pixel shuffle 2 back to LR, added to the head's features, then the
    LR tail lr_width -> 3*s*s + the bicubic skip (srcore LRSkip) and the final shuffle."""

    def __init__(self, cfg: HalfResConfig) -> None:
        super().__init__()
        from srcore.layers import LRSkip

        self.cfg = cfg
        lw, w, s = cfg.lr_width, cfg.width, cfg.scale
        self.head = nn.Conv2d(3, lw, 3, padding=1)
        self.down = nn.Conv2d(lw, w, 3, stride=2, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for _ in range(cfg.depth))
        self.up = nn.Conv2d(w, 4 * lw, 3, padding=1)
        self.tail = nn.Conv2d(lw, 3 * s * s, 3, padding=1)
        self.skip = LRSkip(s, "bicubic")
        self.shuffle = nn.PixelShuffle(s)

    def config(self) -> dict:
        return config_of(self.cfg, "halfres")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = _pad_even(x)
        h0 = F.relu(self.head(xp))
        y = F.relu(self.down(h0))
        for conv in self.body:
            y = F.relu(conv(y))
        y = F.relu(F.pixel_shuffle(self.up(y), 2) + h0)
        return _crop_to(self.shuffle(self.tail(y) + self.skip(xp)), x, self.cfg.scale)


def _build(cfg: HalfResConfig) -> nn.Module:
    return UShapeSR(cfg) if cfg.lr_width else HalfResSR(cfg)


register("halfres", HalfResConfig, _build)
