"""srsearch.latency: table build/resume, fit, predictions, validation, `srsearch latency`.

Most tests use `FakeDevice` + `fake_export`: the "model file" is a JSON description of the
module and the device returns a latency from a known formula, so the numbers are exact and the
tests take milliseconds. One CLI test builds and validates a tiny table on the real host.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from android_bench import BenchResult, Device, DeviceError
from srsearch.cli import main as cli_main
from srsearch.common.errors import UserError
from srsearch.common.layers import LRSkip
from srsearch.deploy.tflite import op_histogram
from srsearch.latency import (
    LatencyModel,
    LatencyTable,
    UnknownKeyError,
    build_table,
    distinct_keys,
    lr_size,
    spanning_archs,
    summarize,
    table_keys,
    validate,
    validation_path,
)
from srsearch.latency.model import fit
from srsearch.latency.probes import (
    ADD_CHAIN,
    AddChain,
    ConvProbe,
    DepthToSpaceProbe,
    combine,
    probes_for,
)
from supernet.space import (
    KEEPS_WIDTH,
    ArchConfig,
    CellConfig,
    LayerSpec,
    SearchSpace,
    layers,
    prelu_plain_keys,
)
from supernet.subnet import SubNet

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

OUT = (32, 24)  # HR (width, height) -> LR 12x16 at x2
LR = (12, 16)
SMALL = SearchSpace(max_depth=3, widths=(8, 12), res_inners=(8, 12), wide_inners=(16, 20))

# The fake target: an op costs MAC_NS per MAC plus a per-kind constant; an add ADD_NS per
# element (the first add of a chain reads one buffer, half price); every invoke INVOKE_MS.
# A whole net costs NET_A x (sum of its ops) + NET_PER_OP per op + NET_B.
MAC_NS = 0.002
CONST_MS = {"conv3": 0.05, "conv1": 0.03, "skip": 0.02, "pixel_shuffle": 0.2}
ADD_NS = 0.01
PRELU_NS = 0.004  # a PReLU is its own op: a pass over the conv's output
# what a build measures: the space's ops and the ECBSR family's PReLU convs
ALL_KEYS = table_keys(SMALL, LR)
INVOKE_MS = 0.004
NET_A, NET_PER_OP, NET_B = 1.15, 0.02, 0.5


def fake_op_ms(spec: LayerSpec) -> float:
    if spec.op == "add":
        return ADD_NS * 1e-6 * spec.cin * spec.h * spec.w
    kind = f"conv{spec.k}" if spec.op == "conv" else spec.op
    prelu = PRELU_NS * 1e-6 * spec.cout * spec.h * spec.w if spec.act == "prelu" else 0.0
    return MAC_NS * 1e-6 * spec.macs + CONST_MS[kind] + prelu


def fake_net_ms(arch: ArchConfig, lr_hw: tuple[int, int]) -> float:
    specs = layers(arch, lr_hw)
    return NET_A * sum(fake_op_ms(s) for s in specs) + NET_PER_OP * len(specs) + NET_B


def fake_export(module: nn.Module, shape: tuple[int, ...], path: Path, options: dict) -> None:
    """Write what the fake device needs to know about ``module`` instead of a flatbuffer."""
    _, c, h, w = shape
    if isinstance(module, SubNet):
        assert options == {"channels_last_io": True, "depth_to_space": True}
        desc: dict[str, Any] = {"net": module.arch.to_dict(), "hw": [h, w]}
    elif isinstance(module, ConvProbe):
        conv = module.conv
        act = "prelu" if module.prelu is not None else "relu" if module.relu else None
        desc = {"op": ["conv", c, conv.out_channels, conv.kernel_size[0], h, w, act]}
    elif isinstance(module, LRSkip):
        desc = {"op": ["skip", c, 3 * module.scale**2, module.weight.shape[-1], h, w, None]}
    elif isinstance(module, DepthToSpaceProbe):
        desc = {"op": ["pixel_shuffle", c, c // module.scale**2, 0, h, w, None]}
    elif isinstance(module, AddChain):
        desc = {"op": ["add", c, c, 0, h, w, None], "adds": module.n}
    else:
        raise AssertionError(f"unexpected module {module}")
    path.write_text(json.dumps(desc))


class FakeDevice(Device):
    """Deterministic latencies from the formula above; counts the models it timed.

    Args:
        name: Goes into the fingerprint (two names = two targets).
        fail_after: Raise DeviceError when asked for model number fail_after + 1.
    """

    def __init__(
        self, name: str = "fake-soc", fail_after: int | None = None, spike_on: int = 0
    ) -> None:
        self.name = name
        self.fail_after = fail_after
        self.spike_on = spike_on  # the spike_on-th timing of each model takes 3x (load spike)
        self.timed: list[dict[str, Any]] = []

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "fake", "name": self.name, "threads": 1, "delegate": "none"}

    def benchmark(
        self, tflite_paths: Sequence[Path], runs: int = 20, warmup: int = 3, *, on_result=None
    ) -> list[BenchResult]:
        results = []
        for path in tflite_paths:
            if self.fail_after is not None and len(self.timed) >= self.fail_after:
                raise DeviceError("fake device unplugged")
            desc = json.loads(Path(path).read_text())
            self.timed.append(desc)
            spike = self.timed.count(desc) == self.spike_on
            result = BenchResult.from_samples(path, [self._ms(desc) * (3 if spike else 1)] * runs)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    @staticmethod
    def _ms(desc: dict[str, Any]) -> float:
        if "net" in desc:
            return fake_net_ms(ArchConfig.from_dict(desc["net"]), tuple(desc["hw"]))
        spec = LayerSpec(*desc["op"])
        if spec.op == "add":
            return INVOKE_MS + fake_op_ms(spec) * (desc["adds"] - 0.5)
        return INVOKE_MS + fake_op_ms(spec)


def _build(path: Path, device: Device, **kw: Any) -> LatencyTable:
    kw = {
        "out_size": OUT,
        "n_nets": 12,
        "runs": 3,
        "warmup": 0,
        "rounds": 1,
        "exporter": fake_export,
        **kw,
    }
    return build_table(device, kw.pop("space", SMALL), path, **kw)


def _all_archs(space: SearchSpace) -> list[ArchConfig]:
    """Brute-force enumeration of a small space."""

    def cells(cin: int, depth: int):
        if depth == 0:
            yield ()
            return
        for block in space.blocks:
            for width in (cin,) if block in KEEPS_WIDTH else space.widths:
                for inner in space.inner_choices(block, width):
                    for rest in cells(width, depth - 1):
                        yield (CellConfig(block, width, inner), *rest)

    return [
        ArchConfig(space.scale, head, c)
        for d in range(space.min_depth, space.max_depth + 1)
        for head in space.widths
        for c in cells(head, d)
    ]


# --- keys, probes, sizes ---------------------------------------------------------------------


def test_lr_size_rounds_up() -> None:
    assert lr_size((1280, 720), 2) == (360, 640)
    assert lr_size((1280, 720), 3) == (240, 427)  # output 1281x720, one column cropped
    assert lr_size((1280, 720), 4) == (180, 320)


def test_distinct_keys_cover_every_arch_once() -> None:
    keys = distinct_keys(SMALL, LR)
    assert len(keys) == len(set(keys))
    every = {spec for arch in _all_archs(SMALL) for spec in layers(arch, LR)}
    assert set(keys) == every
    # head 2; 3x3 + ReLU (conv cells = res firsts) 4; 3x3 (res seconds, wide 3x3s and tails
    # all among in/out in {8, 12}) 4; wide 1x1 expand 4, reduce 4; adds 2 (the last add of 12
    # channels = a res add of width 12); skip; shuffle
    assert len(keys) == 22


def test_default_space_key_count() -> None:
    assert len(distinct_keys(SearchSpace(), lr_size((1280, 720), 2))) == 270


@pytest.mark.parametrize(
    "spec",
    [
        LayerSpec("conv", 8, 12, 3, 6, 5, "relu"),
        LayerSpec("conv", 12, 20, 1, 6, 5, None),
        LayerSpec("skip", 3, 12, 1, 6, 5),
        LayerSpec("add", 8, 8, 0, 6, 5),
        LayerSpec("pixel_shuffle", 27, 3, 0, 6, 5),
    ],
)
def test_probes_compute_the_op(spec: LayerSpec) -> None:
    x = torch.rand(1, spec.cin, spec.h, spec.w)
    for p in probes_for(spec):
        assert p.input_shape == (1, spec.cin, spec.h, spec.w) and p.key == spec
        y = p.module(x)
        if spec.op == "pixel_shuffle":
            assert y.shape == (1, 3, 18, 15)
        else:
            assert y.shape == (1, spec.cout, spec.h, spec.w)
        if spec.act == "relu":
            assert y.min() >= 0
    if spec.op == "add":
        assert [p.variant for p in probes_for(spec)] == ["chain1", f"chain{ADD_CHAIN}"]
        assert torch.equal(probes_for(spec)[1].module(x), ADD_CHAIN * x + x)
        assert combine(spec, {"chain1": 1.0, f"chain{ADD_CHAIN}": 3.0}, 0.5) == 0.5
    else:
        assert combine(spec, {"": 1.25}, 0.25) == 1.0


def test_pixel_shuffle_probe_is_depth_to_space() -> None:
    """Same values as the pixel shuffle up to the channel order the export folds away."""
    from srsearch.deploy.depth_to_space import d2s_permutation

    spec = LayerSpec("pixel_shuffle", 12, 3, 0, 5, 7)
    (d2s,) = probes_for(spec)
    (plain,) = probes_for(spec, depth_to_space=False)
    assert d2s.name.endswith("-d2s") and d2s.name != plain.name  # separate cache files
    x = torch.rand(1, 12, 5, 7)
    y = torch.nn.functional.pixel_shuffle(x, 2)
    assert torch.equal(plain.module(x), y)
    assert torch.equal(d2s.module(x[:, d2s_permutation(3, 2)]), y)


# --- build, resume, fingerprints ---------------------------------------------------------------


def test_build_one_entry_per_key(tmp_path: Path) -> None:
    dev = FakeDevice()
    table = _build(tmp_path / "lut.json", dev)
    keys = ALL_KEYS
    assert list(table.entries) == keys
    own = distinct_keys(SMALL, LR)
    family = prelu_plain_keys(SMALL, LR)
    assert keys[:len(own)] == own and set(keys[len(own):]) == set(family) - set(own)
    prelu = [k for k in family if k.act == "prelu"]
    assert len(prelu) == 2 * len(SMALL.widths)  # head 3->C, conv C->C
    assert [k for k in family if k not in prelu] == [k for k in own if k.op == "skip"]
    # a space with the bicubic skip: the family's own nearest skip is priced too
    bicubic = replace(SMALL, skip="bicubic")
    skips = {k.k for k in distinct_keys(bicubic, LR) if k.op == "skip"}
    assert skips == {5} and {k.k for k in prelu_plain_keys(bicubic, LR) if k.op == "skip"} == {1}
    n_probes = sum(len(probes_for(k)) for k in keys)
    assert len(dev.timed) == 1 + n_probes + 12  # baseline, probes, fit nets
    assert table.io_baseline_ms == pytest.approx(INVOKE_MS, abs=1e-4)
    for key, entry in table.entries.items():  # probe - baseline (adds: chain slope)
        assert entry["median_ms"] == pytest.approx(fake_op_ms(key), abs=2e-4)

    d = json.loads((tmp_path / "lut.json").read_text())
    assert d["fingerprint"] == dev.fingerprint()
    assert d["scale"] == 2 and d["out_size"] == [32, 24] and d["lr_hw"] == [12, 16]
    assert d["entries"][0]["key"] == {
        "op": "conv",
        "cin": 3,
        "cout": 8,
        "k": 3,
        "h": 12,
        "w": 16,
        "act": "relu",
    }
    assert {"median_ms", "probes", "macs"} <= set(d["entries"][0])
    assert len(d["nets"]) == 12 and d["fit"]["n"] == 12
    assert LatencyTable.load(tmp_path / "lut.json").to_dict() == d


def test_interrupted_build_resumes_missing_only(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    keys = ALL_KEYS
    n_probes = sum(len(probes_for(k)) for k in keys)
    failing = FakeDevice(fail_after=14)
    with pytest.raises(DeviceError, match="unplugged"):
        _build(path, failing, batch_size=4)
    kept = LatencyTable.load(path)
    # 14 models ran: the baseline, probes in key order, and fit nets timed between them
    nets_timed = sum("net" in d for d in failing.timed)
    probes_timed = 14 - 1 - nets_timed
    assert nets_timed >= 1 and len(kept.nets) == nets_timed and kept.fit is None
    n_done, probed = 0, 0  # every key whose probes all ran is kept
    while probed + len(probes_for(keys[n_done])) <= probes_timed:
        probed += len(probes_for(keys[n_done]))
        n_done += 1
    assert any(k.op == "add" for k in keys[:n_done])  # a two-probe key among them
    assert list(kept.entries) == keys[:n_done]

    dev = FakeDevice()
    table = _build(path, dev, batch_size=4)
    # the rest (an add whose second chain had not run is timed again)
    assert len(dev.timed) == (1 + n_probes + 12) - 14 + (probes_timed - probed)
    assert not any(d["op"][0] == "add" and d["op"][1] == 1 for d in dev.timed if "op" in d)
    assert list(table.entries) == keys and len(table.nets) == 12

    again = FakeDevice()
    _build(path, again)
    assert again.timed == []  # nothing left to measure

    more = FakeDevice()
    _build(path, more, rounds=2)  # a second round of everything but the baseline
    assert len(more.timed) == n_probes + 12
    assert all(e["rounds"] == 2 for e in LatencyTable.load(path).entries.values())


def test_rounds_take_the_median(tmp_path: Path) -> None:
    """A load spike hits one round of a model; the median of three rounds ignores it."""
    two = _build(tmp_path / "two.json", FakeDevice(spike_on=2), n_nets=0, rounds=2)
    for key, entry in two.entries.items():  # median of two = mean: half the spike stays
        if key.op != "add":
            spiked = 2 * (fake_op_ms(key) + INVOKE_MS) - INVOKE_MS
            assert entry["median_ms"] == pytest.approx(spiked, abs=2e-4)
    table = _build(tmp_path / "three.json", FakeDevice(spike_on=2), n_nets=5, rounds=3)
    for key, entry in table.entries.items():
        assert entry["rounds"] == 3 and entry["median_ms"] == pytest.approx(
            fake_op_ms(key), abs=2e-4
        )
    for net in table.nets.values():
        assert len(net["round_ms"]) == 3
        assert net["median_ms"] == pytest.approx(fake_net_ms(ArchConfig.from_dict(net["arch"]), LR))


def test_probe_cache_is_reused_by_another_device(tmp_path: Path) -> None:
    exported: list[str] = []

    def export(module: nn.Module, shape: tuple[int, ...], path: Path, options: dict) -> None:
        exported.append(path.name)
        fake_export(module, shape, path, options)

    cache = tmp_path / "cache"
    _build(tmp_path / "a.json", FakeDevice("a"), n_nets=0, exporter=export, probe_cache=cache)
    n_probes = sum(len(probes_for(k)) for k in ALL_KEYS)
    assert len(exported) == len(list(cache.glob("*.tflite"))) == n_probes + 1  # + baseline
    exported.clear()
    dev = FakeDevice("b")
    table = _build(tmp_path / "b.json", dev, n_nets=2, exporter=export, probe_cache=cache)
    assert exported == ["net0000.tflite", "net0001.tflite"]  # only the whole nets
    assert len(dev.timed) == n_probes + 1 + 2 and len(table.entries) == len(ALL_KEYS)


def test_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    a = FakeDevice("soc-a")
    _build(path, a, n_nets=0)
    b = FakeDevice("soc-b")
    with pytest.raises(UserError) as err:
        _build(path, b, n_nets=0)
    msg = str(err.value)
    assert a.fingerprint_id() in msg and b.fingerprint_id() in msg and "soc-a" in msg
    assert b.timed == []
    with pytest.raises(UserError, match=b.fingerprint_id()):
        validate(LatencyModel.load(path), b, tmp_path / "v.json", n=3, exporter=fake_export)
    with pytest.raises(UserError, match="scale 2"):
        _build(path, a, space=SearchSpace(scale=3, max_depth=2, widths=(8,)))


# --- the model --------------------------------------------------------------------------------


def test_prediction_recovers_the_formula(tmp_path: Path) -> None:
    table = _build(tmp_path / "lut.json", FakeDevice(), n_nets=16)
    assert table.fit["form"] == "lut+n_ops"  # the fake's true form; per-op forms add nothing
    coef = table.fit["coef"]
    assert coef["lut"] == pytest.approx(NET_A, rel=1e-3)
    assert coef["n_ops"] == pytest.approx(NET_PER_OP, rel=0.05)

    model = LatencyModel(table)
    rng = random.Random(5)
    archs = [SMALL.sample(rng) for _ in range(40)]
    pred = [model.predict(a) for a in archs]
    true = [fake_net_ms(a, LR) for a in archs]
    assert summarize(pred, true)["mape_pct"] < 0.5
    assert model.table_sum(archs[0]) == pytest.approx(
        sum(fake_op_ms(s) for s in layers(archs[0], LR)), abs=1e-3
    )


def test_fit_picks_simplest_form_that_explains_data() -> None:
    rows = [
        {"lut": x, "n_ops": n, "conv3": x * 0.7, "conv1": x * 0.2, "add": x * 0.1, "const": 1.0}
        for x, n in zip(range(1, 13), [5, 8, 4, 9, 7, 5, 12, 6, 8, 10, 4, 7], strict=True)
    ]
    f = fit(rows, [2 * r["lut"] + 3 for r in rows])
    assert f["form"] == "lut" and f["coef"]["lut"] == pytest.approx(2)
    assert f["coef"]["const"] == pytest.approx(3) and f["loo_mape"] < 1e-6
    assert fit(rows[:3], [1.0, 2.0, 3.0])["form"] == "identity"  # too few nets to fit


def test_unknown_key_names_the_layer(tmp_path: Path) -> None:
    model = LatencyModel(_build(tmp_path / "lut.json", FakeDevice(), n_nets=0))
    arch = ArchConfig(2, 8, (CellConfig("conv", 16),))  # width 16 is outside SMALL
    with pytest.raises(UnknownKeyError, match=r"conv 8->16 k3 @12x16 relu.*Rebuild"):
        model.predict(arch)
    with pytest.raises(UserError, match="x3"):
        model.predict(ArchConfig(3, 8, (CellConfig("conv", 8),)))


def test_spanning_archs_cover_the_range() -> None:
    def cost(a: ArchConfig) -> float:
        return fake_net_ms(a, LR)

    archs = spanning_archs(SearchSpace(), 10, 0, cost)
    costs = [cost(a) for a in archs]
    assert len(set(map(str, archs))) == 10
    # the pool holds the min and max arch; the dearest pool net may be a sampled one
    assert costs[0] == cost(SearchSpace().min_arch())
    assert costs[-1] >= cost(SearchSpace().max_arch())
    ratios = [b / a for a, b in zip(costs[:-1], costs[1:], strict=True)]
    assert all(r >= 1 for r in ratios) and max(ratios) < 3  # log-spaced, no big gap
    assert SearchSpace().max_arch() not in spanning_archs(
        SearchSpace(),
        10,
        0,
        cost,
        exclude=[
            json.dumps(SearchSpace().max_arch().to_dict(), sort_keys=True, separators=(",", ":"))
        ],
    )


# --- validation -------------------------------------------------------------------------------


def test_summarize_known_numbers() -> None:
    s = summarize([110, 190, 300, 400], [100, 200, 300, 500])
    assert s["mape_pct"] == pytest.approx((10 + 5 + 0 + 20) / 4)
    assert s["max_error_pct"] == pytest.approx(-20) and s["max_error_index"] == 3
    assert s["spearman"] == pytest.approx(1.0)
    # measured / predicted: 0.909, 1.053, 1, 1.25 -> median (1 + 1.053) / 2
    assert s["speed_ratio"] == pytest.approx((1.0526 + 1) / 2, abs=1e-4)
    r = s["speed_ratio"]
    expected = (
        (
            abs(110 * r - 100) / 100
            + abs(190 * r - 200) / 200
            + abs(300 * r - 300) / 300
            + abs(400 * r - 500) / 500
        )
        / 4
        * 100
    )
    assert s["scale_free_mape_pct"] == pytest.approx(expected)
    assert summarize([2, 4, 6], [3, 6, 9])["scale_free_mape_pct"] == pytest.approx(0)
    # one swapped pair of four: 1 - 6 * (1 + 1) / (4 * 15)
    assert summarize([1, 3, 2, 4], [1, 2, 3, 4])["spearman"] == pytest.approx(0.8)


def test_validate_with_fake_device(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    model = LatencyModel(_build(path, FakeDevice(), n_nets=16))
    out = validation_path(path)
    assert out == tmp_path / "lut.validate.json"
    dev = FakeDevice()
    report = validate(model, dev, out, n=8, passes=2, exporter=fake_export)
    assert len(dev.timed) == 16 and report["n"] == 8 and report["complete"]
    assert report["pass_spread_pct"] == 0  # the fake has no noise
    assert report["mape_pct"] < 0.5 and report["spearman"] == pytest.approx(1.0)
    fit_nets = set(model.table.nets)
    for row in report["nets"]:
        arch = ArchConfig.from_dict(row["arch"])
        assert json.dumps(row["arch"], sort_keys=True, separators=(",", ":")) not in fit_nets
        assert row["measured_ms"] == pytest.approx(fake_net_ms(arch, LR))
        assert row["predicted_ms"] == pytest.approx(model.predict(arch))
    assert json.loads(out.read_text())["mape_pct"] == report["mape_pct"]

    again = FakeDevice()
    assert validate(model, again, out, n=8, passes=2, exporter=fake_export)["n"] == 8
    assert again.timed == []  # reused
    third = validate(model, again, out, n=8, passes=3, exporter=fake_export)
    assert len(again.timed) == 8 and all(len(r["round_ms"]) == 3 for r in third["nets"])


# --- CLI on the real host -----------------------------------------------------------------------


def test_cli_build_and_validate_on_host(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "cache"))  # probe files go here
    lut = tmp_path / "lut.json"
    tiny = ["--blocks", "conv", "--max-width", "8", "--max-depth", "3", "--out-size", "32x24"]
    fast = ["--runs", "3", "--rounds", "1", "--jobs", "1"]  # one process: no worker start-up
    args = ["latency", "build", "--out", str(lut), "--nets", "0", *fast, *tiny]
    assert cli_main(args) == 0
    d = json.loads(lut.read_text())
    # head, cell, tail, skip (bicubic: 5x5), add, ps; + the ECBSR family's head and conv with a
    # PReLU, and its nearest skip (1x1)
    assert len(d["entries"]) == 9 and d["lr_hw"] == [12, 16]
    assert sorted(e["key"]["k"] for e in d["entries"] if e["key"]["op"] == "skip") == [1, 5]
    assert d["target"] == {
        "target": "host",
        "options": {"isolate": False, "threads": 2, "delegate": "xnnpack"},
    }
    assert all(math.isfinite(e["median_ms"]) and e["median_ms"] >= 0 for e in d["entries"])
    cached = list((tmp_path / "cache").glob("latency-probes/*/*.tflite"))
    assert len(cached) == 11  # + baseline, two add chains
    (shuffle,) = [f for f in cached if f.name.startswith("pixel_shuffle")]
    assert op_histogram(shuffle) == {"DEPTH_TO_SPACE": 1}
    assert d["export"] == {"channels_last_io": True, "depth_to_space": True}

    assert cli_main(["latency", "validate", "--lut", str(lut), "--n", "2", *fast]) == 0
    report = json.loads((tmp_path / "lut.validate.json").read_text())
    assert report["n"] == 2 and len(report["nets"]) == 2
    assert "MAPE" in capsys.readouterr().out

    assert cli_main(["latency", "build", "--out", str(lut), "--threads", "1", *tiny]) == 2
    assert "latencies of different targets do not mix" in capsys.readouterr().err


def test_cli_build_int8_times_int8_files_and_keeps_precisions_apart(tmp_path, capsys, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "cache"))
    lut = tmp_path / "lut.json"
    tiny = ["--blocks", "conv", "--max-width", "8", "--max-depth", "2", "--out-size", "32x24"]
    fast = ["--runs", "2", "--rounds", "1", "--jobs", "1"]
    args = ["latency", "build", "--out", str(lut), "--nets", "2", *fast, *tiny]
    assert cli_main([*args, "--precision", "int8"]) == 0
    d = json.loads(lut.read_text())
    assert d["export"] == {"channels_last_io": True, "depth_to_space": True, "precision": "int8"}
    assert len(d["nets"]) == 2
    probes = list((tmp_path / "cache").glob("latency-probes/*/int8/*.tflite"))
    assert len(probes) == 11 and not list((tmp_path / "cache").glob("latency-probes/*/*.tflite"))
    (conv,) = [f for f in probes
               if f.name.startswith("conv-3-8-k3") and f.name.endswith("-relu.tflite")]
    interp = Interpreter(str(conv))
    assert interp.get_input_details()[0]["dtype"].__name__ == "int8"  # quantised, not fp32
    # an fp32 build into the int8 table is refused, naming the setting
    assert cli_main(args) == 2
    assert "has export" in capsys.readouterr().err


def _leafspec_warnings_shown() -> int:
    """In a worker: how many of torch's LeafSpec FutureWarnings would reach the console."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    return len(caught)


def test_export_workers_quiet_the_converters_warning(tmp_path):
    """Warning filters do not cross into spawned workers: the pool sets them in each one."""
    from srsearch.latency.runner import runner

    class NoDevice:
        pass

    with runner(NoDevice(), None, jobs=2) as r:
        assert r.pool.submit(_leafspec_warnings_shown).result() == 0


def test_export_reports_files_already_there_so_the_bar_ends_full(tmp_path):
    """Session 15's main job: with the probes in the cache, the export bar stood at 20/313."""
    from torch import nn

    from srsearch.latency.runner import Job, runner

    made = []

    def exporter(module, shape, path, options):
        Path(path).write_text("x")
        made.append(Path(path).name)

    cached = tmp_path / "cached.tflite"
    cached.write_text("x")
    jobs = [Job("a", cached, nn.Identity(), (1, 3, 4, 4)),
            Job("b", tmp_path / "new.tflite", nn.Identity(), (1, 3, 4, 4))]
    seen = []
    with runner(object(), exporter, jobs=1) as r:
        r.export(jobs, lambda job: seen.append(job.id))
    assert made == ["new.tflite"] and sorted(seen) == ["a", "b"]


def test_the_table_prices_the_scaled_ecbsr_family_with_its_prelus(tmp_path: Path) -> None:
    from srsearch.comparison.fairness import plain_arch, scaled_ecbsr

    model = LatencyModel(_build(tmp_path / "lut.json", FakeDevice(), n_nets=0))
    relu, prelu = plain_arch(2, 2, 12), plain_arch(2, 2, 12, "prelu")
    assert model.covers(relu) and model.covers(prelu)
    assert not model.covers(ArchConfig(2, 12, (CellConfig("wide", 12, 16),), "prelu"))
    assert model.predict(prelu) > model.predict(relu)  # the PReLUs are extra ops
    budget = (model.predict(prelu) + model.predict(relu)) / 2
    found = scaled_ecbsr(model, SMALL, budget)
    assert found["priced_as"] == "prelu" and found["predicted_ms"] <= budget
    assert found["name"] != "ecbsr-m2c12"  # its ReLU twin fits, the real net does not
    # a table without the PReLU keys (built before them) prices the ReLU twin, and says so
    model.table.entries = {k: v for k, v in model.table.entries.items() if k.act != "prelu"}
    assert scaled_ecbsr(model, SMALL, budget)["priced_as"] == "relu"
