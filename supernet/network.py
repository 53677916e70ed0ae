"""The weight-sharing SR supernet (once-for-all interface).

One full-size elastic weight per layer; cell ``i`` holds one elastic cell per block kind (conv,
res, wide each have their own weights at position ``i``). The active architecture picks the
kind per cell and slices widths; cells past its depth are skipped.

    net = SuperNet(SearchSpace(scale=2))
    arch = net.sample_active_subnet(rng)   # train step on net(x)
    model = net.get_active_subnet(arch)    # standalone SubNet with copied weights
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from supernet.cells import KINDS
from supernet.elastic import ElasticConv2d
from supernet.space import KEEPS_WIDTH, ArchConfig, SearchSpace
from supernet.subnet import LRSkip, SubNet

# (name, writers, readers) of a channel space shared by a set of convs
_Group = tuple[str, list[ElasticConv2d], list[ElasticConv2d]]


class SuperNet(nn.Module):
    """Holds every architecture of ``space``; ``forward`` runs the active one."""

    def __init__(self, space: SearchSpace | None = None) -> None:
        super().__init__()
        self.space = space if space is not None else SearchSpace()
        width = max(self.space.widths)
        inners = {b: max(KINDS[b].inner_choices(self.space, width)) for b in self.space.blocks}
        s = self.space.scale
        self.head = ElasticConv2d(3, width, 3)
        self.cells = nn.ModuleList(
            nn.ModuleDict({b: KINDS[b].elastic(width, inners[b]) for b in self.space.blocks})
            for _ in range(self.space.max_depth)
        )
        self.tail = ElasticConv2d(width, 3 * s * s, 3)
        self.skip = LRSkip(s, self.space.skip)
        self.upsample = nn.PixelShuffle(s)
        self._active = self.space.max_arch()

    # --- once-for-all interface -------------------------------------------------------------

    def sample_active_subnet(self, rng: random.Random) -> ArchConfig:
        """Sample an architecture from the space, activate it and return it."""
        arch = self.space.sample(rng)
        self._active = arch
        return arch

    def set_active_subnet(self, arch: ArchConfig) -> None:
        """Activate ``arch``; raises UserError if it is outside the space."""
        self.space.check(arch)
        self._active = arch

    def get_active_subnet(self, arch: ArchConfig | None = None) -> SubNet:
        """A standalone ``SubNet`` of the active architecture (``arch`` is activated first if
        given) holding copies of the sliced weights, on this net's device and dtype."""
        if arch is not None:
            self.set_active_subnet(arch)
        arch = self._active
        net = SubNet(arch).to(self.head.weight)
        self.head.copy_to(net.head)
        for i, (cell, plain) in enumerate(zip(arch.cells, net.cells, strict=True)):
            elastic = self.cells[i][cell.block]
            for name, conv in plain.named_modules():
                if isinstance(conv, nn.Conv2d):
                    elastic.get_submodule(name).copy_to(conv)
        self.tail.copy_to(net.tail)
        return net.train(self.training)

    def get_active_net_config(self) -> dict:
        """The model-registry config of the active subnet: ``{"family", "scale", "arch"}``."""
        return {"family": "subnet", "scale": self._active.scale, "arch": self._active.to_dict()}

    @property
    def active_arch(self) -> ArchConfig:
        return self._active

    def max_arch(self) -> ArchConfig:
        return self.space.max_arch()

    def min_arch(self) -> ArchConfig:
        return self.space.min_arch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, 3, h*s, w*s) through the active architecture."""
        arch = self._active
        feat = F.relu(self.head(x, arch.head_width))
        for i, cell in enumerate(arch.cells):
            feat = self.cells[i][cell.block](feat, cell)
        return self.upsample(self.tail(feat) + self.skip(x))

    # --- channel importance ordering --------------------------------------------------------

    def _trunk_groups(self) -> list[list[int]]:
        """Trunk tensors that must share one channel order, as lists of positions.

        Position ``j`` is the input of cell ``j`` (0: head output; j >= 1: output of cell j-1).
        Res and wide cells add their input to their output, so with either kind in the space
        all positions are one residual chain. The tail reads the
        output of whichever cell is last, so positions min_depth..max_depth always share.
        """
        n = self.space.max_depth + 1
        root = list(range(n))

        def find(j: int) -> int:
            while root[j] != j:
                j = root[j]
            return j

        joins = [(j, self.space.max_depth) for j in range(self.space.min_depth, n)]
        if KEEPS_WIDTH & set(self.space.blocks):
            joins += [(j, j + 1) for j in range(n - 1)]
        for a, b in joins:
            root[find(a)] = find(b)
        groups: dict[int, list[int]] = {}
        for j in range(n):
            groups.setdefault(find(j), []).append(j)
        return sorted(groups.values())

    def _channel_groups(self) -> Iterator[_Group]:
        """Every channel space: the convs writing it (output channels) and reading it (input)."""
        trunk = self._trunk_groups()
        for positions in trunk:
            writers, readers = [], []
            for j in positions:
                if j == 0:
                    writers.append(self.head)
                else:
                    for block, cell in self.cells[j - 1].items():
                        writers += [cell.get_submodule(n) for n in KINDS[block].writers()]
                if j < self.space.max_depth:
                    for block, cell in self.cells[j].items():
                        readers += [cell.get_submodule(n) for n in KINDS[block].readers()]
                if j >= self.space.min_depth:
                    readers.append(self.tail)
            readers = list({id(r): r for r in readers}.values())  # the tail once
            name = "trunk" if len(trunk) == 1 else "trunk" + ",".join(map(str, positions))
            yield name, writers, readers
        for i, cells in enumerate(self.cells):
            for block, cell in cells.items():
                for space, (writer, readers) in KINDS[block].internal().items():
                    yield (
                        f"cells.{i}.{block}.{space}",
                        [cell.get_submodule(writer)],
                        [cell.get_submodule(r) for r in readers],
                    )

    def channel_importance(self) -> dict[str, torch.Tensor]:
        """Per channel space, the summed L1 norm of the filters writing each channel."""
        return {
            name: torch.stack([w.importance() for w in writers]).sum(0)
            for name, writers, _ in self._channel_groups()
        }

    @torch.no_grad()
    def reorder_channels(self) -> dict[str, torch.Tensor]:
        """Sort every channel space by importance, most important first, so narrow subnets keep
        the important channels. Writers' outputs and readers' inputs are permuted together, so
        every architecture at full widths (the max arch included) computes the same function.
        Tail outputs (the pixel-shuffle layout) are never permuted. Call it before building an
        optimizer: optimizer state is not permuted.

        Returns:
            Name of each channel space -> the permutation applied (new index -> old index).
        """
        perms = {}
        for name, writers, readers in self._channel_groups():
            importance = torch.stack([w.importance() for w in writers]).sum(0)
            perm = torch.argsort(importance, descending=True, stable=True)
            for w in writers:
                w.permute_out(perm)
            for r in readers:
                r.permute_in(perm)
            perms[name] = perm
        return perms
