"""benchmarks/block_speed.py builds the nets it says it times."""

import importlib.util
from pathlib import Path

import pytest
import torch

from srsearch.models import build_model

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "block_speed.py"


@pytest.fixture(scope="module")
def bs():
    spec = importlib.util.spec_from_file_location("block_speed", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_net_is_a_x2_net(bs):
    x = torch.rand(1, 3, 12, 10)
    for label, kind, c, n, arg in bs.NETS:
        y = bs.Net(kind, c, n, arg).eval()(x)
        assert y.shape == (1, 3, 24, 20), label


def test_reference_is_ecbsr_m4c16s_size(bs):
    """The reference row has ECBSR-M4C16's conv shapes (the net it collapses to at export)."""
    _, kind, c, n, arg = bs.NETS[0]
    ecbsr = build_model({"family": "ecbsr", "scale": 2, "m": 4, "channels": 16}).collapse()

    def convs(m):
        return [tuple(x.weight.shape) for x in m.modules() if isinstance(x, torch.nn.Conv2d)]

    assert convs(bs.Net(kind, c, n, arg)) == convs(ecbsr)


def test_blocks_have_the_stated_structure(bs):
    dw = bs.block("dwsep", 24, 1)
    assert dw[0].groups == 24 and dw[2].kernel_size == (1, 1)
    g = bs.block("group", 32, 4)
    assert g[0].groups == 4
    inv = bs.block("invres", 16, 2)
    x = torch.rand(1, 16, 5, 5)
    for p in inv.parameters():
        torch.nn.init.zeros_(p)
    assert torch.equal(inv(x), x)  # the identity path
    assert inv.body[2].groups == 32
    with pytest.raises(ValueError, match="unknown block kind"):
        bs.block("nope", 8, 1)
