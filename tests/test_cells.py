"""Every registered cell kind, tested from its declaration (timm style: a new kind in
`supernet.cells.KINDS` is covered here without new tests)."""

import pytest
import torch
from torch import nn

from srcore.errors import UserError
from srsearch.search.pruning import apply_pruning, channel_groups, prune_by_ratios
from supernet.cells import KINDS, kind
from supernet.network import SuperNet
from supernet.space import SearchSpace, layers


def _space(name: str) -> SearchSpace:
    return SearchSpace(scale=2, max_depth=2, widths=(8, 12), res_inners=(8, 12),
                       wide_inners=(16, 20), blocks=(name,))


@pytest.mark.parametrize("name", list(KINDS))
def test_kind_declaration_matches_its_modules(name):
    k = KINDS[name]
    space = _space(name)
    torch.manual_seed(0)
    net = SuperNet(space).eval()
    arch = space.max_arch()
    sub = net.get_active_subnet(arch).eval()
    x = torch.rand(1, 3, 9, 7)
    torch.testing.assert_close(sub(x), net(x), rtol=0, atol=1e-6)
    cell = sub.cells[0]
    assert isinstance(cell, k.plain) and isinstance(net.cells[0][name], k.elastic)
    specs = [s for s in layers(arch, (9, 7)) if s.block == f"cell0.{name}"]
    declared = [getattr(cell, c.name) for c in k.convs]
    assert [(s.cin, s.cout, s.k) for s in specs if s.op == "conv"] == [
        (m.in_channels, m.out_channels, m.kernel_size[0]) for m in declared]
    assert [s.act for s in specs if s.op == "conv"] == [
        "relu" if c.relu else None for c in k.convs]
    assert (specs[-1].op == "add") == k.residual
    assert {n for n, m in cell.named_children() if isinstance(m, nn.Conv2d)} == {
        c.name for c in k.convs}
    # pruning: one inner group per cell of a kind with inner widths; pruning by half keeps a
    # working net of the declared (smaller) widths
    groups = {g.kind for g in channel_groups(arch)}
    assert (f"{name}_inner" in groups) == k.has_inner and ("low" in groups) == (k.low is not None)
    prune = prune_by_ratios(sub, {g.name: 0.5 for g in channel_groups(arch)})
    small = apply_pruning(sub, prune)
    assert small(x).shape == sub(x).shape and small.arch == prune.pruned_arch()


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(UserError, match=r"'dense' is unknown; choose one of \['conv', 'res', "
                                        r"'wide'\]"):
        kind("dense")
