"""benchmarks/block_speed.py builds the nets it says it times."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from srsearch.models import _registry, build_model

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "block_speed.py"


@pytest.fixture(scope="module")
def bs():
    spec = importlib.util.spec_from_file_location("block_speed", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["block_speed"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["block_speed"]
    _registry._FAMILIES.pop("block_speed", None)  # leave the registry as other tests find it


def test_every_net_is_a_x2_net_over_nearest(bs):
    """With its tail at zero each net is the input upsampled by nearest neighbour: the skip
    keeps each colour in its own channel (a first draft's channel concat mixed them)."""
    x = torch.rand(1, 3, 12, 10)
    nearest = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    for label, kind, c, n, arg in bs.NETS:
        net = bs.Net(kind, c, n, arg).eval()
        assert net(x).shape == (1, 3, 24, 20), label
        torch.nn.init.zeros_(net.tail.weight)
        torch.nn.init.zeros_(net.tail.bias)
        assert torch.allclose(net(x), nearest, atol=1e-6), label


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


def test_nets_train_as_a_registered_family(bs):
    """`--train-steps` trains through srsearch's trainer, which rebuilds a model from the config
    its checkpoint holds."""
    bs.register_family()
    bs.register_family()  # a second call (a worker process, a second run) is harmless
    net = bs.Net("dwsep", 24, 2, 1)
    cfg = {"family": "block_speed", "scale": 2, "kind": "dwsep", "c": 24, "n": 2, "arg": 1}
    rebuilt = build_model(cfg)
    assert rebuilt.config() == cfg
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]
