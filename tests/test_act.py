"""PReLU as an architecture's activation: the config, the subnet, the latency keys, pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srcore.errors import UserError
from srsearch.search.pruning import PruneConfig, apply_pruning, channel_groups
from supernet.space import ArchConfig, CellConfig, layers
from supernet.subnet import SubNet

CELLS = (CellConfig("conv", 12), CellConfig("res", 12, 8), CellConfig("wide", 12, 20))


def test_act_is_part_of_the_architecture_and_old_files_read_the_same():
    relu = ArchConfig(2, 8, CELLS)
    prelu = ArchConfig(2, 8, CELLS, "prelu")
    assert "act" not in relu.to_dict()  # files written before act existed are unchanged
    assert prelu.to_dict()["act"] == "prelu"
    assert ArchConfig.from_dict(prelu.to_dict()) == prelu != relu
    assert ArchConfig.from_json(relu.to_json()) == relu
    with pytest.raises(UserError, match="act is 'gelu'"):
        ArchConfig(2, 8, CELLS, "gelu")
    with pytest.raises(UserError, match="optionally act"):
        ArchConfig.from_dict({**relu.to_dict(), "activation": "prelu"})
    # the latency model keys the activation: PReLU is its own op after the conv
    acts = {s.act for s in layers(prelu, (4, 4))}
    assert acts == {"prelu", None} and {s.act for s in layers(relu, (4, 4))} == {"relu", None}
    assert [s.op for s in layers(prelu, (4, 4))] == [s.op for s in layers(relu, (4, 4))]


def test_prelu_subnet_has_one_slope_per_channel_and_relu_state_is_unchanged():
    relu = SubNet(ArchConfig(2, 8, CELLS))
    assert not any(isinstance(m, nn.PReLU) for m in relu.modules())
    assert not any("act" in k for k in relu.state_dict())  # old checkpoints load
    prelu = SubNet(ArchConfig(2, 8, CELLS, "prelu"))
    slopes = {k: v.shape[0] for k, v in prelu.state_dict().items() if "act" in k}
    assert slopes == {"head_act.weight": 8, "cells.0.act.weight": 12, "cells.1.act.weight": 8,
                      "cells.2.act.weight": 20}
    assert SubNet.from_config(prelu.config()).arch.act == "prelu"
    prelu.load_state_dict(relu.state_dict(), strict=False)
    with torch.no_grad():
        for m in prelu.modules():
            if isinstance(m, nn.PReLU):
                m.weight.zero_()  # slope 0: a ReLU
    x = torch.rand(1, 3, 9, 7)
    torch.testing.assert_close(prelu(x), relu(x))


def test_pruning_keeps_the_slopes_of_the_kept_channels():
    torch.manual_seed(0)
    net = SubNet(ArchConfig(2, 12, CELLS, "prelu")).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand_like(m.weight))
    groups = {g.name: g for g in channel_groups(net.arch)}
    full = PruneConfig(net.arch)
    x = torch.rand(1, 3, 10, 8)
    torch.testing.assert_close(apply_pruning(net, full)(x), net(x))
    keep = {"cells.1.inner": (0, 2, 5, 7)}
    assert groups["cells.1.inner"].size == 8
    small = apply_pruning(net, PruneConfig(net.arch, keep))
    assert small.arch.act == "prelu" and small.arch.cells[1].inner == 4
    torch.testing.assert_close(small.cells[1].act.weight, net.cells[1].act.weight[[0, 2, 5, 7]])
    torch.testing.assert_close(small.head_act.weight, net.head_act.weight)
