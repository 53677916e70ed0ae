"""The search space, the weight-sharing supernet and its standalone subnets."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from srsearch.common.errors import UserError
from supernet.elastic import ElasticConv2d
from supernet.network import SuperNet
from supernet.space import ArchConfig, CellConfig, SearchSpace, layers, macs, params, wide_low
from supernet.subnet import SubNet, SubNetConfig

X = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convs: with 2 threads on a busy 2-core host, OpenMP sync costs ~100x the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def supernets() -> dict[int, SuperNet]:
    torch.manual_seed(0)
    return {s: SuperNet(SearchSpace(scale=s)).eval() for s in (2, 3, 4)}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_subnet_matches_supernet(supernets: dict[int, SuperNet], scale: int) -> None:
    net, rng = supernets[scale], random.Random(scale)
    kinds = set()
    for _ in range(50):
        arch = net.sample_active_subnet(rng)
        kinds |= {c.block for c in arch.cells}
        with torch.no_grad():
            expected = net(X)
            net.set_active_subnet(net.space.min_arch())
            got = net.get_active_subnet(arch)(X)  # activates arch again
        assert net.active_arch == arch
        assert got.shape == (1, 3, 12 * scale, 12 * scale)
        assert (got - expected).abs().max().item() <= 1e-5
    assert kinds == {"conv", "res", "wide"}


def test_subnet_is_standalone_and_compact(supernets: dict[int, SuperNet]) -> None:
    net = supernets[2]
    arch = ArchConfig(2, 16, (CellConfig("res", 16, 8), CellConfig("wide", 16, 32),
                              CellConfig("conv", 24)))
    sub = net.get_active_subnet(arch)
    assert not any(isinstance(m, ElasticConv2d | SuperNet) for m in sub.modules())
    assert sum(p.numel() for p in sub.parameters()) == params(arch)
    assert sub.head.weight.data_ptr() != net.head.weight.data_ptr()  # copies, not views
    assert (
        net.get_active_net_config()
        == sub.config()
        == {
            "family": "subnet",
            "scale": arch.scale,
            "arch": arch.to_dict(),
        }
    )


def test_subnet_state_dict_round_trip(supernets: dict[int, SuperNet]) -> None:
    net, rng = supernets[3], random.Random(7)
    for _ in range(5):
        sub = net.get_active_subnet(net.space.sample(rng))
        buf = io.BytesIO()
        torch.save({"config": sub.config(), "state_dict": sub.state_dict()}, buf)
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        rebuilt = SubNet.from_config(json.loads(json.dumps(saved["config"])))
        rebuilt.load_state_dict(saved["state_dict"])  # strict: same keys, same shapes
        with torch.no_grad():
            assert torch.equal(rebuilt(X), sub(X))
    assert SubNet.from_config(SubNetConfig(sub.config()["arch"])).arch == sub.arch


def test_skip_is_nearest_neighbour_upsampling() -> None:
    for s in (2, 3, 4):
        arch = ArchConfig(s, 8, (CellConfig("conv", 8),))
        sub = SubNet(arch)
        assert torch.equal(sub.skip(X), X.repeat_interleave(s * s, dim=1))
        with torch.no_grad():
            sub.tail.weight.zero_()
            sub.tail.bias.zero_()
            assert torch.equal(sub(X), nn.functional.interpolate(X, scale_factor=s))
        assert "skip.weight" not in sub.state_dict()


def test_json_round_trip() -> None:
    rng = random.Random(1)
    for s in (2, 3, 4):
        space = SearchSpace(scale=s)
        for _ in range(30):
            arch = space.sample(rng)
            assert space.contains(arch)
            assert ArchConfig.from_json(arch.to_json()) == arch
            assert ArchConfig.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    conv = ArchConfig.from_dict(
        {"scale": 2, "head_width": 8, "cells": [{"block": "conv", "width": 12}]}
    )
    assert conv.cells[0].inner == 12


GOOD = {"scale": 2, "head_width": 16, "cells": [{"block": "res", "width": 16, "inner": 8}]}


def _with(**changes: object) -> dict:
    d = json.loads(json.dumps(GOOD))
    cell = changes.pop("cell", None)
    if cell is not None:
        d["cells"][0].update(cell)
    d.update(changes)
    return d


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (_with(scale=5), ["scale is 5", "[2, 3, 4]"]),
        (_with(scale=True), ["scale is True"]),
        (_with(head_width=0), ["head_width is 0", "positive integer"]),
        (_with(head_width=16.0), ["head_width is 16.0"]),
        (_with(cells=[]), ["cells is empty"]),
        (_with(cells="conv"), ["cells is 'conv'"]),
        (_with(cell={"block": "dense"}), ["cells[0]", "'dense'", "['conv', 'res', 'wide']"]),
        (_with(cell={"width": 24}), ["cells[0]", "'res' cell of width 24", "set its width to 16"]),
        (
            _with(cell={"block": "wide", "width": 8, "inner": 32}),
            ["cells[0]", "'wide' cell of width 8", "input has 16", "set its width to 16"],
        ),
        (_with(cell={"block": "conv", "inner": 4}), ["cells[0]", "inner is 4", "width 16"]),
        (_with(cell={"block": "wide", "inner": None}), ["cells[0]", "needs `inner`"]),
        (_with(depth=3), ["keys", "depth", "exactly ['cells', 'head_width', 'scale']"]),
        ({**GOOD, "cells": [{"block": "conv"}]}, ["cells[0]", "keys block, width"]),
    ],
)
def test_invalid_configs_name_the_field(config: dict, words: list[str]) -> None:
    with pytest.raises(UserError) as err:
        ArchConfig.from_dict(config)
    for word in words:
        assert word in str(err.value)


def test_not_json() -> None:
    with pytest.raises(UserError, match="not valid JSON"):
        ArchConfig.from_json("{scale: 2")


def test_outside_the_space_is_rejected(supernets: dict[int, SuperNet]) -> None:
    arch = ArchConfig(2, 68, (CellConfig("res", 68, 4),) * 9)
    with pytest.raises(UserError) as err:
        supernets[2].set_active_subnet(arch)
    msg = str(err.value)
    assert "depth 9 outside 1..8" in msg and "head_width 68" in msg and "cells[0].inner 4" in msg
    with pytest.raises(UserError, match="scale 2 but the space is for scale 3"):
        supernets[3].get_active_subnet(ArchConfig(2, 8, (CellConfig("conv", 8),)))
    with pytest.raises(UserError, match="family 'espcn'"):
        SubNet.from_config({"family": "espcn", "arch": GOOD})
    with pytest.raises(UserError, match="max_depth 2 is below min_depth 3"):
        SearchSpace(min_depth=3, max_depth=2)
    with pytest.raises(UserError, match="blocks"):
        SearchSpace(blocks=("conv", "dense"))


def _importance_sorted(net: SuperNet) -> bool:
    return all((v[:-1] >= v[1:]).all() for v in net.channel_importance().values())


def test_reorder_channels_keeps_full_width_function() -> None:
    torch.manual_seed(1)
    space = SearchSpace(scale=3)
    net = SuperNet(space).eval()
    rng = random.Random(3)
    wmax, rmax, emax = max(space.widths), max(space.res_inners), max(space.wide_inners)
    full = [space.max_arch()]  # every cell at full width: a fixed function of the weights
    for _ in range(10):
        kinds = [rng.choice(space.blocks) for _ in range(rng.randint(1, 8))]
        inner = {"conv": wmax, "res": rmax, "wide": emax}
        full.append(ArchConfig(3, wmax, tuple(CellConfig(k, wmax, inner[k]) for k in kinds)))
    narrow = [space.min_arch(), space.sample(rng)]
    with torch.no_grad():
        before = []
        for arch in full + narrow:
            net.set_active_subnet(arch)
            before.append(net(X))
        assert not _importance_sorted(net)
        perms = net.reorder_channels()
        after = []
        for arch in full + narrow:
            net.set_active_subnet(arch)
            after.append(net(X))
    n = len(full)
    for b, a in zip(before[:n], after[:n], strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    for b, a in zip(before[n:], after[n:], strict=True):  # narrow nets now keep other channels
        assert (a - b).abs().max().item() > 1e-3
    # one trunk order (residual chain), plus the inner spaces of every res and wide cell
    assert len(perms) == 1 + 8 * 3
    assert perms["trunk"].shape == (wmax,) and perms["cells.7.wide.low"].shape == (wide_low(wmax),)
    for name, perm in perms.items():
        assert not torch.equal(perm, torch.arange(len(perm))), name
    assert _importance_sorted(net)
    again = net.reorder_channels()
    assert all(torch.equal(p, torch.arange(len(p))) for p in again.values())


def test_trunk_groups_without_residual_cells() -> None:
    net = SuperNet(SearchSpace(min_depth=2, max_depth=4, widths=(8, 12), blocks=("conv",)))
    # positions 0 and 1 are free; 2..4 all feed the tail, so they share one order
    assert net._trunk_groups() == [[0], [1], [2, 3, 4]]
    with torch.no_grad():
        net.set_active_subnet(ArchConfig(2, 12, (CellConfig("conv", 12),) * 3))
        before = net(X)
        assert set(net.reorder_channels()) == {"trunk0", "trunk1", "trunk2,3,4"}
        assert (net(X) - before).abs().max().item() <= 1e-5


def _all_archs(space: SearchSpace) -> list[ArchConfig]:
    """Brute force: every combination of raw choices that makes a valid architecture."""
    cells = [
        CellConfig(b, w, i)
        for b in space.blocks
        for w in space.widths
        for i in ({"conv": [w], "res": space.res_inners, "wide": space.wide_inners}[b])
    ]
    out = []
    for d in range(space.min_depth, space.max_depth + 1):
        for head in space.widths:
            for body in itertools.product(cells, repeat=d):
                try:
                    out.append(ArchConfig(space.scale, head, body))
                except UserError:  # a res or wide cell whose width is not its input width
                    pass
    return out


def test_size_matches_brute_force() -> None:
    space = SearchSpace(
        min_depth=1, max_depth=3, widths=(4, 8), res_inners=(4, 8, 12), wide_inners=(8,)
    )
    archs = _all_archs(space)
    assert len(set(archs)) == len(archs) == space.size()
    assert all(space.contains(a) for a in archs)
    rng = random.Random(0)
    assert {space.sample(rng) for _ in range(3000)} <= set(archs)
    assert space.max_arch() in archs and space.min_arch() in archs
    # by hand: 2 heads; n archs, n/2 at each width; a cell goes to either width by conv (from
    # any of the n) or stays by res (3 inners) or wide (1): n + 4 n/2 = 3n per width, n -> 6n
    assert space.size() == 12 + 72 + 432
    deeper = SearchSpace(
        min_depth=2, max_depth=3, widths=(4, 8), res_inners=(4, 8, 12), wide_inners=(8,)
    )
    assert deeper.size() == 72 + 432


def test_default_space_size_and_extremes() -> None:
    space = SearchSpace()
    # n archs, n/7 at each width; a cell goes to any width by conv (from any of the n) or stays
    # by res (7 inners) or wide (13): n + 20 n/7 = 27 n/7 per width, so n -> 27 n
    assert space.size() == 7 * sum(27**d for d in range(1, 9)) == 2_053_045_476_720
    hw = (360, 640)
    lo, hi = macs(space.min_arch(), hw), macs(space.max_arch(), hw)
    assert space.min_arch() == ArchConfig(2, 8, (CellConfig("conv", 8),))
    assert space.max_arch() == ArchConfig(2, 32, (CellConfig("res", 32, 32),) * 8)
    rng = random.Random(0)
    sampled = [macs(space.sample(rng), hw) for _ in range(200)]
    assert lo <= min(sampled) and max(sampled) <= hi
    assert lo < 1e9 and hi > 30e9  # from well under to far over a 2-4 GMAC budget


def test_layers_and_macs_by_hand() -> None:
    arch = ArchConfig(
        2,
        8,
        (
            CellConfig("conv", 12),
            CellConfig("res", 12, 8),
            CellConfig("wide", 12, 16),  # identity add; low = wide_low(12) = 12
            CellConfig("conv", 8),
        ),
    )
    specs = layers(arch, (6, 10))
    assert [(s.op, s.cin, s.cout, s.k, s.act) for s in specs] == [
        ("conv", 3, 8, 3, "relu"),
        ("conv", 8, 12, 3, "relu"),
        ("conv", 12, 8, 3, "relu"),
        ("conv", 8, 12, 3, None),
        ("add", 12, 12, 0, None),
        ("conv", 12, 16, 1, "relu"),
        ("conv", 16, 12, 1, None),
        ("conv", 12, 12, 3, None),
        ("add", 12, 12, 0, None),
        ("conv", 12, 8, 3, "relu"),
        ("conv", 8, 12, 3, None),
        ("skip", 3, 12, 1, None),
        ("add", 12, 12, 0, None),
        ("pixel_shuffle", 12, 3, 0, None),
    ]
    assert all((s.h, s.w) == (6, 10) for s in specs)
    assert specs[2].block == "cell1.res" and specs[-4].block == "tail"
    assert specs[2] == layers(ArchConfig(2, 12, (CellConfig("res", 12, 8),)), (6, 10))[1]
    # per LR pixel: head 216, conv 864, res 864+864, wide 192+192+1296, conv 864, tail 864,
    # skip 36
    assert macs(arch, (6, 10)) == 60 * (216 + 864 + 1728 + 1680 + 864 + 864 + 36)
    assert params(arch) == sum(p.numel() for p in SubNet(arch).parameters())


def test_macs_match_forward_hooks() -> None:
    rng, hw = random.Random(5), (5, 7)
    for s in (2, 3, 4):
        space = SearchSpace(scale=s)
        for _ in range(5):
            arch = space.sample(rng)
            count = [3 * 3 * s * s * hw[0] * hw[1]]  # the fixed skip conv is not an nn.Conv2d

            def hook(m: nn.Conv2d, _: object, out: torch.Tensor) -> None:
                count.append(m.weight.numel() * out.shape[2] * out.shape[3])  # noqa: B023

            sub = SubNet(arch)
            for m in sub.modules():
                if isinstance(m, nn.Conv2d):
                    m.register_forward_hook(hook)
            with torch.no_grad():
                sub(torch.rand(1, 3, *hw))
            assert sum(count) == macs(arch, hw)


def test_sample_at_a_given_depth() -> None:
    space, rng = SearchSpace(), random.Random(2)
    archs = [space.sample(rng, depth=8) for _ in range(20)]
    assert {a.depth for a in archs} == {8} and all(space.contains(a) for a in archs)
    assert len({c.block for a in archs for c in a.cells}) == 3  # kinds still random
    with pytest.raises(UserError, match="depth 9 is outside 1..8"):
        space.sample(rng, depth=9)


def test_untrained_conv_cells_pass_the_trunk_through() -> None:
    torch.manual_seed(0)
    net = SuperNet(SearchSpace())
    x = torch.rand(1, 32, 8, 8)  # the trunk after the head's ReLU is non-negative
    with torch.no_grad():
        for i in (0, 7):
            cell = net.cells[i]["conv"]
            full = cell(x, CellConfig("conv", 32))
            assert (full - x).abs().mean() < 0.1 * x.mean()
            narrow = cell(x, CellConfig("conv", 12))  # keeps the first (most important) 12
            assert (narrow - x[:, :12]).abs().mean() < 0.1 * x.mean()
            wider = cell(x[:, :16], CellConfig("conv", 32))
            assert (wider[:, :16] - x[:, :16]).abs().mean() < 0.1 * x.mean()
            assert wider[:, 16:].abs().mean() < 0.1 * x.mean()  # new channels start near 0


def test_bicubic_skip_is_bicubic_upsampling_and_is_carried_by_the_space() -> None:
    """skip "bicubic": the fixed 5x5 conv, pixel-shuffled, is torch's bicubic upsampling away
    from the border (zero padding there) at every scale; the space hands it to every net it
    makes, and the JSON names it only when it is not the default."""
    from dataclasses import replace

    from srcore.layers import LRSkip
    from supernet.space import DEFAULT_SKIP, SearchSpace, make_space

    for s in (2, 3, 4):
        sub = SubNet(ArchConfig(s, 8, (CellConfig("conv", 8),), skip="bicubic"))
        with torch.no_grad():
            sub.tail.weight.zero_()
            sub.tail.bias.zero_()
            up, ref = sub(X), nn.functional.interpolate(X, scale_factor=s, mode="bicubic")
        b = 2 * s  # the two LR pixels nearest the border see the zero padding
        assert torch.allclose(up[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5)
        assert not torch.allclose(up, nn.functional.interpolate(X, scale_factor=s), atol=1e-2)
        assert "skip.weight" not in sub.state_dict()
    assert LRSkip(2, "bicubic").weight.shape == (12, 3, 5, 5)
    arch = ArchConfig(2, 8, (CellConfig("conv", 8),), skip="bicubic")
    assert arch.to_dict()["skip"] == "bicubic" and ArchConfig.from_json(arch.to_json()) == arch
    assert "skip" not in replace(arch, skip="nearest").to_dict()  # older files read the same
    with pytest.raises(UserError, match="skip is 'bilinear'"):
        ArchConfig(2, 8, (CellConfig("conv", 8),), skip="bilinear")
    space = make_space(2, max_width=12, max_depth=2)
    assert space.skip == DEFAULT_SKIP == "bicubic" and SearchSpace().skip == "nearest"
    net = SuperNet(space)
    sampled = net.sample_active_subnet(random.Random(0))
    assert sampled.skip == "bicubic" and net.get_active_subnet(sampled).skip.mode == "bicubic"
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(X), net.get_active_subnet(sampled).eval()(X), atol=1e-5)
    # a net with another skip is outside the space, and a nearest table does not cover it
    with pytest.raises(UserError, match="skip 'nearest' but the space's is 'bicubic'"):
        space.check(replace(sampled, skip="nearest"))
    assert space.missing_from(replace(space, skip="nearest")) == [
        "skip 'bicubic' (the other has 'nearest')"]
