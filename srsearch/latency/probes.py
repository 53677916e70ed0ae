"""Small models that time one op of the search space on the target (the LUT's measurements).

One probe per `LayerSpec` key. A probe is the op alone, exported by `srsearch.deploy.tflite.convert`
exactly like a whole subnet (same converter, NHWC I/O), so the table measures what the
compiler makes of the op (fused ReLU, XNNPACK kernels and their channel packing, the
pixel-shuffle lowering), not its FLOPs.

Why one op per model: every op of an SR net at 640x360 moves megabytes, far more than any
cache, so an op costs about the same alone as inside the net; the fixed cost of one `invoke`
(the "I/O baseline", measured with `baseline_probe`) is subtracted. The pixel shuffle is timed
as the converter lowers it in the exported net: one DEPTH_TO_SPACE by default. The exception
is ADD: a one-input probe can only add a tensor to itself, which reads one buffer where the
net reads two, so adds are timed as a chain (see `AddChain`) and the table keeps the per-add
difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srcore.layers import LRSkip
from supernet.arch import SKIP_K
from supernet.space import LayerSpec

# Bump when a probe's definition changes: cached probe files of older versions are not reused.
PROBES_VERSION = 1
# Adds per long chain; the add entry is (t(ADD_CHAIN) - t(1)) / (ADD_CHAIN - 1).
ADD_CHAIN = 5


@dataclass(frozen=True)
class Probe:
    """One model to export and time.

    Attributes:
        key: The LUT key it measures.
        name: File-name-safe id, unique per (key, variant).
        module: The model; input (1, cin, h, w) float32.
        input_shape: NCHW input shape for `convert`.
        variant: "" for the op itself; for adds "chain1" / f"chain{ADD_CHAIN}".
    """

    key: LayerSpec
    name: str
    module: nn.Module
    input_shape: tuple[int, int, int, int]
    variant: str = ""


class ConvProbe(nn.Module):
    """A learned conv, 'same' padding, then its activation: a ReLU (fused into the conv), a
    PReLU (its own PRELU op) or none."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.conv = nn.Conv2d(spec.cin, spec.cout, spec.k, padding=spec.k // 2)
        self.relu = spec.act == "relu"
        self.prelu = nn.PReLU(spec.cout) if spec.act == "prelu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.prelu is not None:
            return self.prelu(y)
        return F.relu(y) if self.relu else y


class DepthToSpaceProbe(nn.Module):
    """The pixel shuffle as `srsearch.deploy.tflite.convert(depth_to_space=True)` lowers it in a
    net: one DEPTH_TO_SPACE op (NHWC). The channel order differs from `nn.PixelShuffle`, which only
    matters for values, not for timing; the NCHW<->NHWC permutes here cancel against those of
    the NHWC export, so the file holds the one op.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import srsearch.deploy.depth_to_space  # noqa: F401  (registers the op and its lowering)

        y = torch.ops.srsearch.depth_to_space(x.permute(0, 2, 3, 1), self.scale)
        return y.permute(0, 3, 1, 2)  # (1, s*s*C, h, w) -> (1, C, h*s, w*s)


class AddChain(nn.Module):
    """``n`` elementwise adds: y = x + x, then y = y + x, n - 1 times.

    The first add reads one buffer twice; each further one reads two buffers and writes one,
    as a residual add does in the net. Timing chains of 1 and ``ADD_CHAIN`` and taking the
    slope gives the cost of one real add with the invoke overhead and the first, cheaper add
    cancelled.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + x
        for _ in range(self.n - 1):
            y = y + x
        return y


def _check_spec(spec: LayerSpec) -> None:
    if spec.op not in ("conv", "skip", "add", "pixel_shuffle"):
        raise ValueError(f"no probe for op {spec.op!r} ({key_str(spec)})")


def probes_for(spec: LayerSpec, depth_to_space: bool = True) -> list[Probe]:
    """The probe models that measure ``spec`` (two for adds, one otherwise).

    Args:
        depth_to_space: Time the pixel shuffle as one DEPTH_TO_SPACE op (what the export does
            by default) rather than litert-torch's RESHAPE/TRANSPOSE chain.
    """
    _check_spec(spec)
    shape = (1, spec.cin, spec.h, spec.w)
    name = key_name(spec)
    if spec.op == "conv":
        return [Probe(spec, name, ConvProbe(spec), shape)]
    if spec.op == "skip":
        scale = math.isqrt(spec.cout // spec.cin)
        mode = {k: m for m, k in SKIP_K.items()}[spec.k]  # 1: nearest, 5: bicubic
        return [Probe(spec, name, LRSkip(scale, mode), shape)]
    if spec.op == "pixel_shuffle":
        scale = math.isqrt(spec.cin // spec.cout)
        if depth_to_space:
            return [Probe(spec, f"{name}-d2s", DepthToSpaceProbe(scale), shape)]
        return [Probe(spec, name, nn.PixelShuffle(scale), shape)]
    return [
        Probe(spec, f"{name}-chain{n}", AddChain(n), shape, f"chain{n}") for n in (1, ADD_CHAIN)
    ]


def combine(spec: LayerSpec, ms: dict[str, float], baseline_ms: float) -> float:
    """The entry's latency from its probes' times ({variant: ms}) and the invoke baseline."""
    if spec.op == "add":
        return (ms[f"chain{ADD_CHAIN}"] - ms["chain1"]) / (ADD_CHAIN - 1)
    return ms[""] - baseline_ms


def baseline_probe() -> Probe:
    """The I/O baseline: a 1-channel 8x8 add, i.e. the cost of one `invoke` of a tiny model."""
    spec = LayerSpec("add", 1, 1, 0, 8, 8)
    return Probe(spec, "baseline-add1-8x8", AddChain(1), (1, 1, 8, 8), "baseline")


def key_str(spec: LayerSpec) -> str:
    """Readable key for messages: 'conv 16->24 k3 @360x640 relu'."""
    act = f" {spec.act}" if spec.act else ""
    k = f" k{spec.k}" if spec.k else ""
    return f"{spec.op} {spec.cin}->{spec.cout}{k} @{spec.h}x{spec.w}{act}"


def key_name(spec: LayerSpec) -> str:
    """File-name-safe key: 'conv-16-24-k3-360x640-relu'."""
    return f"{spec.op}-{spec.cin}-{spec.cout}-k{spec.k}-{spec.h}x{spec.w}-{spec.act or 'none'}"
