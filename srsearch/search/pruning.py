"""Structured (channel) pruning of a standalone subnet: the decision is data, applying it is
a separate function.

A subnet's channels fall into *groups* that must be pruned together:

- ``trunkJ``: the trunk tensors from position J on (position j is the input of cell j; 0 is
  the head output; D, the last cell's output, feeds the tail). Res and wide cells add their
  input to their output, so positions j and j+1 share one channel set; a conv cell starts a
  new group. Writers: the head and each cell's last conv; readers: each cell's first conv(s)
  and the tail.
- ``cells.I.inner``: the mid channels of res cell I (conv1 -> conv2) or the expansion of wide
  cell I (expand -> reduce).
- ``cells.I.low``: the low-rank channels of wide cell I (reduce -> conv). Their number is
  derived, ``wide_low(width)``, so they follow the cell's (trunk) width and have no ratio.

`PruneConfig` holds the kept channel indices per group; `prune_by_ratios` makes one from
per-group ratios (widths rounded to multiples of 4, channels with the largest L1 filter norms
kept, summed over a group's writers); `apply_pruning` builds the compact `SubNet` with the
kept weights copied. Groups left out of a `PruneConfig` keep all their channels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from srsearch.common.errors import UserError
from supernet.cells import KINDS
from supernet.cells.base import IN, INNER, LOW, OUT
from supernet.space import ArchConfig, CellConfig
from supernet.subnet import SubNet

FORMAT = "srsearch.prune/1"
STEP = 4  # widths stay multiples of 4 (channel packing of XNNPACK / GPU delegates)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are pruned together.

    Attributes:
        name: ``trunk{J}``, ``cells.{I}.inner`` or ``cells.{I}.low``.
        kind: "trunk", "res_inner", "wide_inner" or "low" (floors are per kind).
        size: Channels before pruning.
        where: Trunk: the positions the group spans; else (cell index,).
    """

    name: str
    kind: str
    size: int
    where: tuple[int, ...]


def _tied(arch: ArchConfig, i: int) -> bool:
    """Whether cell i's output shares channels with its input (an identity add)."""
    return KINDS[arch.cells[i].block].residual


def trunk_of(arch: ArchConfig) -> list[str]:
    """The trunk group name of every position 0..D."""
    names, start = [], 0
    for j in range(arch.depth + 1):
        if j > 0 and not _tied(arch, j - 1):
            start = j
        names.append(f"trunk{start}")
    return names


def channel_groups(arch: ArchConfig) -> list[ChannelGroup]:
    """Every channel group of ``arch``, trunk groups first."""
    trunk = trunk_of(arch)
    widths = [arch.head_width] + [c.width for c in arch.cells]
    groups = [ChannelGroup(n, "trunk", widths[trunk.index(n)],
                           tuple(j for j, m in enumerate(trunk) if m == n))
              for n in dict.fromkeys(trunk)]
    for i, c in enumerate(arch.cells):
        kind = KINDS[c.block]
        if kind.has_inner:
            groups.append(ChannelGroup(f"cells.{i}.inner", f"{c.block}_inner", c.inner, (i,)))
        if kind.low is not None:
            groups.append(ChannelGroup(f"cells.{i}.low", "low", kind.low(c.width), (i,)))
    return groups


def _writers(model: SubNet, group: ChannelGroup) -> list[nn.Conv2d]:
    """The convs whose output channels are ``group``."""
    if group.kind != "trunk":
        i = group.where[0]
        conv = KINDS[model.arch.cells[i].block].writer(LOW if group.kind == "low" else INNER)
        return [getattr(model.cells[i], conv.name)]
    out = []
    for j in group.where:
        if j == 0:
            out.append(model.head)
        else:  # the conv of cell j-1 that writes its output
            conv = KINDS[model.arch.cells[j - 1].block].writer(OUT)
            out.append(getattr(model.cells[j - 1], conv.name))
    return out


def importance(model: SubNet, group: ChannelGroup) -> torch.Tensor:
    """Summed L1 norm of the filters writing each channel of ``group``.  # (size,)"""
    return torch.stack([w.weight.detach().abs().sum(dim=(1, 2, 3))
                        for w in _writers(model, group)]).sum(0)


@dataclass(frozen=True)
class PruneConfig:
    """A pruning decision: which channels of which group of ``arch`` to keep.

    Attributes:
        arch: The architecture being pruned (the stage-2 subnet).
        keep: Group name -> kept channel indices, ascending. Missing groups keep all.
        ratios: The per-group ratios the decision was made from (a record; not applied).
    """

    arch: ArchConfig
    keep: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    ratios: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        groups = {g.name: g for g in channel_groups(self.arch)}
        keep = {}
        for name, idx in self.keep.items():
            if name not in groups:
                raise UserError(f"prune config names channel group {name!r}, which "
                                f"{self.arch.to_json()} lacks; its groups: {sorted(groups)}")
            idx = tuple(sorted(int(i) for i in idx))
            size = groups[name].size
            if not idx or len(set(idx)) != len(idx) or idx[0] < 0 or idx[-1] >= size:
                raise UserError(f"prune config keeps {list(idx)} of group {name!r}; give "
                                f"distinct indices in 0..{size - 1}, at least one")
            keep[name] = idx
        object.__setattr__(self, "keep", keep)
        object.__setattr__(self, "ratios", {k: float(v) for k, v in self.ratios.items()})
        self.pruned_arch()  # validates the widths

    def kept(self, group: ChannelGroup) -> list[int]:
        return list(self.keep.get(group.name, range(group.size)))

    def pruned_arch(self) -> ArchConfig:
        """The compact architecture: every width = the number of kept channels."""
        groups = {g.name: g for g in channel_groups(self.arch)}
        trunk = trunk_of(self.arch)
        width = [len(self.kept(groups[n])) for n in trunk]
        cells = []
        for i, c in enumerate(self.arch.cells):
            w = width[i + 1]
            kind = KINDS[c.block]
            if not kind.has_inner:
                cells.append(CellConfig(c.block, w))
                continue
            inner = len(self.kept(groups[f"cells.{i}.inner"]))
            cells.append(CellConfig(c.block, w, inner))
            if kind.low is not None:
                low, need = len(self.kept(groups[f"cells.{i}.low"])), kind.low(w)
                if low != need:
                    raise UserError(f"prune config keeps {low} low-rank channels of "
                                    f"{c.block} cell {i}, but its width {w} needs "
                                    f"{kind.low.__name__}({w}) = {need}")
        return ArchConfig(self.arch.scale, width[0], tuple(cells), self.arch.act,
                          self.arch.skip)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "arch": self.arch.to_dict(),
                "pruned_arch": self.pruned_arch().to_dict(),
                "keep": {k: list(v) for k, v in self.keep.items()}, "ratios": dict(self.ratios)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PruneConfig:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise UserError(f"not a prune config (format {FORMAT}); give a prune.json written by "
                            "`srsearch search`")
        prune = cls(ArchConfig.from_dict(d["arch"]), d.get("keep", {}), d.get("ratios", {}))
        if "pruned_arch" in d and prune.pruned_arch().to_dict() != d["pruned_arch"]:
            raise UserError("prune config: pruned_arch disagrees with arch and keep; fix or "
                            "delete pruned_arch (it is derived)")
        return prune

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PruneConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise UserError(f"prune config is not valid JSON: {e}") from None


def _round(width: int, ratio: float, floor: int) -> int:
    """Width kept at ``ratio`` pruned, on the multiple-of-4 grid, within [floor, width]."""
    target = STEP * math.floor(width * (1.0 - ratio) / STEP + 0.5)  # half up
    return min(width, max(min(floor, width), target))


def pruned_widths(arch: ArchConfig, ratios: Mapping[str, float],
                  floors: Mapping[str, int]) -> dict[str, int]:
    """The kept channel count of every group for per-group ``ratios`` (missing: 0).

    Widths are rounded to multiples of 4 and kept >= ``floors[kind]`` (or the current width
    if smaller). Low-rank groups follow their cell's new width.
    """
    groups = channel_groups(arch)
    width = {g.name: _round(g.size, ratios.get(g.name, 0.0), floors.get(g.kind, STEP))
             for g in groups if g.kind != "low"}
    trunk = trunk_of(arch)
    for g in groups:
        if g.kind == "low":
            low = KINDS[arch.cells[g.where[0]].block].low
            width[g.name] = low(width[trunk[g.where[0] + 1]])
    return width


def uniformly_pruned(arch: ArchConfig, ratio: float, floors: Mapping[str, int]) -> ArchConfig:
    """``arch`` pruned by the same ``ratio`` in every group (widths only: depth and cell kinds
    stay); ``ratio`` = the largest stage-3 ratio gives the narrowest net stage 3 can reach."""
    widths = pruned_widths(arch, {g.name: ratio for g in channel_groups(arch)}, floors)
    return PruneConfig(arch, {n: tuple(range(w)) for n, w in widths.items()}).pruned_arch()


def uniform_fit(arch: ArchConfig, predict: Callable[[ArchConfig], float],
                floors: Mapping[str, int], budget_ms: float,
                max_ratio: float) -> tuple[float, float]:
    """The smallest uniform ratio (0.01 grid, up to ``max_ratio``) whose pruned net is predicted
    within ``budget_ms``, with that prediction; when none is, ``max_ratio`` and its (over
    budget) prediction."""
    steps = int(round(max_ratio * 100))
    for step in range(steps + 1):
        ms = float(predict(uniformly_pruned(arch, step / 100, floors)))
        if ms <= budget_ms:
            break
    return step / 100, ms


def prune_by_ratios(model: SubNet, ratios: Mapping[str, float],
                    floors: Mapping[str, int] | None = None) -> PruneConfig:
    """The decision for per-group ``ratios``: in each group keep the channels with the largest
    L1 filter norms (`importance`), as many as `pruned_widths` says."""
    arch = model.arch
    widths = pruned_widths(arch, ratios, floors or {})
    keep = {}
    for g in channel_groups(arch):
        if widths[g.name] < g.size:
            top = torch.argsort(importance(model, g), descending=True, stable=True)
            keep[g.name] = tuple(sorted(top[: widths[g.name]].tolist()))
    return PruneConfig(arch, keep, dict(ratios))


@torch.no_grad()
def _copy(src: nn.Conv2d, dst: nn.Conv2d, out_idx: list[int], in_idx: list[int]) -> None:
    dst.weight.copy_(src.weight[out_idx][:, in_idx])
    dst.bias.copy_(src.bias[out_idx])


@torch.no_grad()
def _copy_act(src: nn.Module, dst: nn.Module, idx: list[int]) -> None:
    """A PReLU keeps the slopes of the kept channels; a ReLU has nothing to copy."""
    if isinstance(src, nn.PReLU):
        dst.weight.copy_(src.weight[idx])


def apply_pruning(subnet: SubNet, prune: PruneConfig) -> SubNet:
    """A compact standalone `SubNet` of ``prune.pruned_arch()`` holding ``subnet``'s kept
    weights (same device, dtype and train/eval mode)."""
    if subnet.arch != prune.arch:
        raise UserError(f"prune config is for {prune.arch.to_json()} but the subnet is "
                        f"{subnet.arch.to_json()}; prune the subnet it was made for")
    arch = prune.arch
    groups = {g.name: g for g in channel_groups(arch)}
    trunk = [prune.kept(groups[n]) for n in trunk_of(arch)]
    out = SubNet(prune.pruned_arch()).to(subnet.head.weight)
    rgb = list(range(3))
    _copy(subnet.head, out.head, trunk[0], rgb)
    _copy_act(subnet.head_act, out.head_act, trunk[0])
    for i, (c, src, dst) in enumerate(zip(arch.cells, subnet.cells, out.cells, strict=True)):
        kept = {IN: trunk[i], OUT: trunk[i + 1]}  # the same group in a residual cell
        for space in (INNER, LOW):
            if f"cells.{i}.{space}" in groups:
                kept[space] = prune.kept(groups[f"cells.{i}.{space}"])
        for conv in KINDS[c.block].convs:
            _copy(getattr(src, conv.name), getattr(dst, conv.name), kept[conv.cout],
                  kept[conv.cin])
            if conv.relu:  # each kind has one activation, after this conv
                _copy_act(src.act, dst.act, kept[conv.cout])
    _copy(subnet.tail, out.tail, list(range(subnet.tail.out_channels)), trunk[-1])
    return out.train(subnet.training)
