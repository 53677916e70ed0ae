"""Elastic layers: one full-size weight each, sliced to the active widths (once-for-all style).

Slicing always keeps a prefix (``weight[:out, :in]``), so which channels a narrow subnet keeps
is decided by the channel order; ``SuperNet.reorder_channels`` puts the important ones first.

The elastic cells themselves live with their kind (`supernet.cells`), whose declaration says,
for that reordering, which convs write a cell's output, read its input, and write and read its
internal channel spaces (`CellKind.writers`, `readers`, `internal`). Their child names match the
kind's plain cell, so a subnet's weights are copied by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ElasticConv2d(nn.Module):
    """A ``k x k`` conv (stride 1, same padding) of up to ``max_in -> max_out`` channels."""

    def __init__(self, max_in: int, max_out: int, k: int) -> None:
        super().__init__()
        self.max_in, self.max_out, self.k = max_in, max_out, k
        self.weight = nn.Parameter(torch.empty(max_out, max_in, k, k))
        self.bias = nn.Parameter(torch.empty(max_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The ``nn.Conv2d`` default, for the full-size weight."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.max_in * self.k * self.k)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """Conv with the first ``x.shape[1]`` input and ``out_channels`` output channels."""
        cin, cout = x.shape[1], self.max_out if out_channels is None else out_channels
        if cin > self.max_in or cout > self.max_out:
            raise ValueError(
                f"{cin}->{cout} channels exceeds this layer's {self.max_in}->{self.max_out}"
            )
        return F.conv2d(x, self.weight[:cout, :cin], self.bias[:cout], padding=self.k // 2)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        """Copy the slice matching ``conv``'s shape into a plain conv."""
        cout, cin = conv.weight.shape[:2]
        conv.weight.copy_(self.weight[:cout, :cin])
        conv.bias.copy_(self.bias[:cout])

    def importance(self) -> torch.Tensor:
        """L1 norm of each output filter.  # (max_out,)"""
        return self.weight.detach().abs().sum(dim=(1, 2, 3))

    @torch.no_grad()
    def permute_out(self, perm: torch.Tensor) -> None:
        self.weight.copy_(self.weight[perm])
        self.bias.copy_(self.bias[perm])

    @torch.no_grad()
    def permute_in(self, perm: torch.Tensor) -> None:
        self.weight.copy_(self.weight[:, perm])

    def extra_repr(self) -> str:
        return f"max_in={self.max_in}, max_out={self.max_out}, k={self.k}"
