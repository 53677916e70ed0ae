"""FSRCNN (Dong et al., ECCV 2016): shrink, map, expand at LR; a 9x9 transposed conv upsamples.

The `fsrcnn` and `fsrcnn-s` presets add the global skip (nearest-neighbour upsampling of the
input, as `LRSkip` + pixel shuffle) that the other models here have; `fsrcnn-paper` is without.

LiteRT converters fail on the strided transposed conv, so ``collapse()`` gives the exact
sub-pixel form (``FSRCNNSubpixel``): a stride-1 conv at LR resolution to 3*s*s channels and a
pixel shuffle. Output pixel ``o = q*s + r`` (per axis) of the transposed conv is
``b + sum_j x[q - j] * w[j*s + r + pad]``, an ordinary correlation in ``q`` for each phase ``r``
with the kernel taps sub-sampled by ``s`` and flipped; missing inputs at the borders are the
conv's zero padding, so the two forms agree everywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from srsearch.models._layers import LRSkip, check_scale
from srsearch.models._registry import config_of, register, register_preset


@dataclass(frozen=True)
class FSRCNNConfig:
    scale: int = 2
    d: int = 56  # feature width
    s: int = 12  # shrunk width
    m: int = 4  # mapping layers
    skip: bool = False  # add the repeated-input global skip (nearest-neighbour upsampling)

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
        self.skip = LRSkip(sc) if cfg.skip else None
        self.shuffle = nn.PixelShuffle(sc)

    def config(self) -> dict:
        return config_of(self.cfg, "fsrcnn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.deconv(self.body(x))
        if self.skip is not None:
            y = y + self.shuffle(self.skip(x))  # nearest-neighbour upsampling of the input
        return y

    @torch.no_grad()
    def collapse(self) -> FSRCNNSubpixel:
        """The exact inference form: the same body, the transposed conv as conv + pixel shuffle."""
        conv = _subpixel_conv(self.deconv)
        return FSRCNNSubpixel(
            copy.deepcopy(self.body), conv, self.cfg.scale, copy.deepcopy(self.skip)
        ).train(self.training)


class FSRCNNSubpixel(nn.Module):
    """FSRCNN's inference form: plain convs, PReLUs and one pixel shuffle (no config: it is
    only ever built from an FSRCNN, whose config the checkpoint and the export sidecar keep)."""

    def __init__(self, body: nn.Sequential, conv: nn.Conv2d, scale: int,
                 skip: LRSkip | None = None) -> None:
        super().__init__()
        self.body = body
        self.conv = conv
        self.skip = skip
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.body(x))  # (B, 3*s*s, h, w)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.shuffle(y)  # -> (B, 3, h*s, w*s)


def _taps(kernel: int, stride: int, pad: int) -> list[list[int]]:
    """Per output phase r: the js with 0 <= j*stride + r + pad < kernel (input offset -j)."""
    return [
        [j for j in range(-kernel, kernel + 1) if 0 <= j * stride + r + pad < kernel]
        for r in range(stride)
    ]


@torch.no_grad()
def _subpixel_conv(deconv: nn.ConvTranspose2d) -> nn.Conv2d:
    """The stride-1 conv whose pixel shuffle equals `deconv` (output size in * stride)."""
    (kh, kw), (sh, sw), (ph, pw) = deconv.kernel_size, deconv.stride, deconv.padding
    oph, opw = deconv.output_padding
    s = sh
    if (
        sw != s
        or deconv.groups != 1
        or deconv.dilation != (1, 1)
        or kh - 2 * ph + oph != s
        or kw - 2 * pw + opw != s
    ):
        raise ValueError(f"no sub-pixel form implemented for {deconv}")
    taps_y, taps_x = _taps(kh, s, ph), _taps(kw, s, pw)
    # Symmetric window covering every phase's offsets (taps a phase lacks stay zero).
    radius = max(abs(j) for taps in (*taps_y, *taps_x) for j in taps)
    size = 2 * radius + 1
    w = deconv.weight.detach().to(torch.float64)  # (cin, cout, kh, kw)
    cin, cout = w.shape[:2]
    weight = torch.zeros(cout, s, s, cin, size, size, dtype=torch.float64, device=w.device)
    for ry, jys in enumerate(taps_y):
        for rx, jxs in enumerate(taps_x):
            for jy in jys:
                for jx in jxs:
                    tap = w[:, :, jy * s + ry + ph, jx * s + rx + pw]  # (cin, cout)
                    weight[:, ry, rx, :, radius - jy, radius - jx] = tap.T
    dtype = deconv.weight.dtype
    conv = nn.Conv2d(cin, cout * s * s, size, padding=radius, device=w.device, dtype=dtype)
    # PixelShuffle reads channel c*s*s + ry*s + rx for colour c, phase (ry, rx).
    conv.weight.copy_(weight.reshape(cout * s * s, cin, size, size).to(dtype))
    bias = torch.zeros(cout, dtype=torch.float64, device=w.device)
    if deconv.bias is not None:
        bias = deconv.bias.detach().to(torch.float64)
    conv.bias.copy_(bias.repeat_interleave(s * s).to(dtype))
    return conv


register("fsrcnn", FSRCNNConfig, FSRCNN)
# With the global skip, as ESPCN's preset: at 1000 steps on builtin, fsrcnn-s reached 33.45 dB on
# the val split (lr 1e-3; 33.30 at 5e-3); without it 28.98 at 1e-3, 30.65 at 5e-3 and 31.95 at
# 1e-2, all below bicubic's 32.92 (docs/baselines.md). fsrcnn-paper is the paper's network.
register_preset("fsrcnn", {"family": "fsrcnn", "skip": True})
register_preset("fsrcnn-s", {"family": "fsrcnn", "d": 32, "s": 5, "m": 1, "skip": True})
register_preset("fsrcnn-paper", {"family": "fsrcnn", "skip": False})
