"""Training-time re-parameterisable forms of a searched subnet (`rep`), and ECB's one-conv
forward: both must be the same function (and gradients) as the plain / branch-by-branch form."""

from __future__ import annotations

import json

import pytest
import torch

from srsearch.common.errors import UserError
from srsearch.models import build_model, inference_form
from srsearch.models.ecbsr import ECB
from srsearch.models.subnet import REP_KINDS, RepSubNet, subnet_config
from supernet.space import ArchConfig
from supernet.subnet import SubNet

ARCH = ArchConfig.from_dict({"scale": 2, "head_width": 12, "cells": [
    {"block": "conv", "width": 8},
    {"block": "res", "width": 8, "inner": 12},
    {"block": "wide", "width": 8, "inner": 16},
    {"block": "conv", "width": 8},
]})


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)


@pytest.mark.parametrize("rep", [r for r in REP_KINDS if r != "none"])
def test_rep_subnet_collapses_to_the_plain_subnet_exactly(rep):
    model = build_model(json.loads(json.dumps(subnet_config(ARCH, rep)))).double().eval()
    _perturb(model)
    plain = inference_form(model)
    assert type(plain) is SubNet and plain.config() == subnet_config(ARCH)
    assert all(type(m).__name__ in ("Conv2d", "LRSkip", "PixelShuffle", "ModuleList", "SubNet",
                                    "ConvCell", "ResCell", "WideCell", "ReLU")
               for m in plain.modules())
    x = torch.rand(2, 3, 13, 11, dtype=torch.float64)
    ref = model(x)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(plain(x), ref, atol=1e-10, rtol=0)
    # the training form has more parameters (its branches) than what ships
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("rep", [r for r in REP_KINDS if r != "none"])
def test_from_plain_starts_exactly_where_the_inherited_subnet_is(rep):
    plain = SubNet(ARCH).double().eval()
    _perturb(plain, 2)
    net = RepSubNet.from_plain(plain, rep).eval()
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(net(x), plain(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(net.collapse()(x), plain(x), atol=1e-10, rtol=0)
    # and it trains: every branch gets a gradient (but the biases a damped branch holds at 0)
    net.train()
    net(x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert all(n.endswith("conv0.bias") for n in frozen) and (rep == "ecb") == bool(frozen)


def test_rep_config_round_trips_and_bad_rep_is_named():
    cfg = subnet_config(ARCH, "ecb")
    assert build_model(cfg).config() == cfg
    assert subnet_config(ARCH) == {"family": "subnet", "scale": 2, "arch": ARCH.to_dict()}
    with pytest.raises(UserError, match="rep 'vgg'.*none, repvgg, ecb"):
        build_model({**cfg, "rep": "vgg"})


@pytest.mark.parametrize("cin,cout,act", [(12, 12, "prelu"), (3, 8, "relu"), (8, 27, None)])
def test_ecb_one_conv_forward_equals_its_branches_values_and_gradients(cin, cout, act):
    torch.manual_seed(0)
    block = ECB(cin, cout, act).double()
    _perturb(block)
    x = torch.rand(2, cin, 10, 9, dtype=torch.float64)
    y1, y2 = block(x), block.forward_branches(x)
    torch.testing.assert_close(y1, y2, atol=1e-12, rtol=0)
    params = list(block.parameters())
    g1 = torch.autograd.grad(y1.square().sum(), params)
    g2 = torch.autograd.grad(y2.square().sum(), params)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_damped_branches_start_quiet_and_still_collapse_exactly():
    from srsearch.models.ecbsr import DAMPED_W0, ECBSR, ECBSRConfig, SeqConv3x3

    torch.manual_seed(0)
    paper = SeqConv3x3("conv1x1-conv3x3", 16, 16)
    torch.manual_seed(0)
    damped = SeqConv3x3("conv1x1-conv3x3", 16, 16, init="damped")
    torch.testing.assert_close(damped.conv0.weight, paper.conv0.weight * DAMPED_W0)
    assert not damped.conv0.bias.any() and not damped.conv0.bias.requires_grad
    assert paper.conv0.bias.requires_grad
    # the subnet's ECB form and an ECBSR asked for it start damped; ECBSR's default is the paper's
    net = RepSubNet(ARCH, "ecb")
    firsts = [m.conv0 for m in net.modules() if isinstance(m, SeqConv3x3)]
    assert firsts and not any(c.bias.requires_grad for c in firsts)
    ecbsr = ECBSR(ECBSRConfig(m=1, channels=8, branch_init="damped")).double().eval()
    assert all(c.conv0.bias.requires_grad for c in ECBSR(ECBSRConfig()).modules()
               if isinstance(c, SeqConv3x3))
    _perturb(ecbsr)  # every parameter, the frozen biases too: the collapse stays exact
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(ecbsr.collapse()(x), ecbsr(x), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="branch_init 'calm'.*paper.*damped"):
        ECBSRConfig(branch_init="calm")


def _head_alive_after_adam(branch_init: str, steps: int = 10) -> float:
    """Fraction of the head's ReLU outputs above zero after ``steps`` Adam steps at lr 2e-3 of
    a ReLU ECBSR on smooth random images."""
    import torch.nn.functional as F

    from srsearch.models.ecbsr import ECBSR, ECBSRConfig

    torch.manual_seed(0)
    net = ECBSR(ECBSRConfig(m=2, channels=16, act="relu", branch_init=branch_init))
    g = torch.Generator().manual_seed(1)
    hr = F.interpolate(torch.rand(8, 3, 12, 12, generator=g), size=48, mode="bicubic",
                       align_corners=False).clamp(0, 1)
    lr = F.avg_pool2d(hr, 2)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 2e-3)
    for _ in range(steps):
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net.blocks[0](lr) > 0).float().mean())


def test_damped_branches_keep_the_relus_alive_where_the_papers_die():
    # What the damped init is for (docs/search.md, session 12): with ReLU and the paper's init,
    # the first steps move the block's bias by the sum of every branch's and the head dies.
    paper, damped = _head_alive_after_adam("paper"), _head_alive_after_adam("damped")
    assert paper < 0.05 < 0.1 < damped, (paper, damped)
