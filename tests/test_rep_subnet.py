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
    # and it trains: every branch gets a gradient
    net.train()
    net(x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


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
