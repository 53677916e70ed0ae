"""PReLU as one LiteRT PRELU op (`srsearch.deploy.tflite.convert(native_prelu=True)`, the default).

litert-torch 0.10 decomposes ``nn.PReLU`` into RELU, SUB and two MUL ops (four passes over the
feature map); LiteRT has a PRELU op that XNNPACK and the GPU delegate run as one. Measured on
this project's 2-core host (benchmarks/prelu_lowering.py, docs/export.md): the native op makes
ECBSR-M4C16/M4C32 and FSRCNN 17-21 % faster; an 8-channel net gains about nothing.

`native_prelu_form` swaps every ``nn.PReLU`` of a module (a copy) for `NHWCPReLU`, which calls
the torch custom op ``srsearch::prelu`` on an NHWC view; the op is lowered to ``tfl.prelu``
through litert-torch's lowering registry (`srsearch.deploy._tfl_ops`), as DEPTH_TO_SPACE is. The
permutes around it cancel against the NHWC layout litert-torch gives the convolutions, so the
file holds no TRANSPOSE for it (tested).

Not for int8: PT2E quantisation does not annotate a custom op, so `convert` keeps the
decomposed form there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from srsearch.deploy._tfl_ops import lower_to_tfl


@torch.library.custom_op("srsearch::prelu", mutates_args=())
def prelu_nhwc(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """LiteRT PRELU: ``x`` NHWC (N, H, W, C), ``alpha`` (1, 1, C)."""
    return torch.where(x >= 0, x, x * alpha)


@prelu_nhwc.register_fake
def _(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


lower_to_tfl(torch.ops.srsearch.prelu.default, "tfl.prelu")


class NHWCPReLU(nn.Module):
    """``nn.PReLU`` on an NCHW tensor, computed by ``srsearch::prelu`` in NHWC."""

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tfl.prelu wants alpha of rank 3 for a rank-4 input; one slope per channel, also when
        # the PReLU has a single shared parameter (static shapes: this folds to a constant).
        alpha = self.weight.reshape(1, 1, -1).expand(1, 1, x.shape[1])
        return torch.ops.srsearch.prelu(x.permute(0, 2, 3, 1), alpha).permute(0, 3, 1, 2)


def replace_prelus(module: nn.Module, make: Callable[[nn.PReLU], nn.Module]) -> nn.Module:
    """A copy of `module` with every ``nn.PReLU`` replaced by ``make(prelu)`` under the same
    name (`module` itself when it has none); plain modules and torch.fx GraphModules alike."""
    if not any(isinstance(m, nn.PReLU) for m in module.modules()):
        return module
    out = copy.deepcopy(module)
    for name, mod in list(out.named_modules()):
        if isinstance(mod, nn.PReLU):
            parent, _, leaf = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, leaf, make(mod))
    return out


def native_prelu_form(module: nn.Module) -> nn.Module:
    """`module` with every ``nn.PReLU`` replaced by `NHWCPReLU` (see `replace_prelus`)."""
    return replace_prelus(module, NHWCPReLU)
