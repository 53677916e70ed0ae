"""srsearch.deploy.tflite: conversion matches PyTorch, op counts, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from srsearch.common.errors import UserError
from srsearch.deploy import tflite

# torch.export inside litert-torch trips a torch deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")


class TinySR(nn.Module):
    """conv-relu-conv-PixelShuffle, x2: the shape of every ESPCN-like net."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(torch.relu(self.body(x))))  # (B,12,H,W) -> (B,3,2H,2W)


@pytest.fixture(scope="module")
def tiny() -> TinySR:
    torch.manual_seed(0)
    return TinySR()


@pytest.fixture(scope="module")
def converted(tiny: TinySR, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    tiny.train()  # convert must evaluate in eval mode and restore this
    out = tflite.convert(tiny, (1, 3, 12, 16), path)
    assert tiny.training
    return out


def test_convert_matches_pytorch(tiny: TinySR, converted: Path) -> None:
    x = np.random.default_rng(1).random((1, 3, 12, 16), dtype=np.float32)
    got = tflite.run_tflite(converted, x)
    with torch.no_grad():
        want = tiny.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 3, 24, 32)
    assert np.max(np.abs(got - want)) < 1e-4


def test_convert_writes_atomically(converted: Path) -> None:
    assert converted.read_bytes()[4:8] == b"TFL3"
    assert [p.name for p in converted.parent.iterdir()] == ["tiny.tflite"]  # no temp files


def test_op_histogram_counts_convs(converted: Path) -> None:
    ops = tflite.op_histogram(converted)
    assert ops["CONV_2D"] == 2
    # ReLU is fused into the conv; PixelShuffle is lowered to layout ops, not a custom op.
    assert "RELU" not in ops
    assert set(ops) <= {"CONV_2D", "TRANSPOSE", "RESHAPE"}


def test_channels_last_io(tiny: TinySR, converted: Path, tmp_path: Path) -> None:
    path = tflite.convert(tiny, (1, 3, 12, 16), tmp_path / "nhwc.tflite", channels_last_io=True)
    x = np.random.default_rng(2).random((1, 3, 12, 16), dtype=np.float32)
    got = tflite.run_tflite(path, x.transpose(0, 2, 3, 1))
    with torch.no_grad():
        want = tiny.eval()(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    assert got.shape == (1, 24, 32, 3)
    assert np.max(np.abs(got - want)) < 1e-4
    # NHWC I/O drops the input transpose but, after PixelShuffle (lowered through NCHW
    # RESHAPE/TRANSPOSE ops), adds one at the output: never more layout ops than NCHW I/O.
    nchw, nhwc = tflite.op_histogram(converted), tflite.op_histogram(path)
    assert nhwc["TRANSPOSE"] <= nchw["TRANSPOSE"]
    assert nhwc["CONV_2D"] == 2


def test_mismatch_leaves_no_file(tiny: TinySR, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tflite, "run_tflite", lambda path, x: np.zeros((1, 3, 24, 32)) + 5)
    with pytest.raises(tflite.ConversionError, match="disagrees with PyTorch"):
        tflite.convert(tiny, (1, 3, 12, 16), tmp_path / "bad.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(3, 12, 16), (1, 3, 0, 16)])
def test_bad_shape(tiny: TinySR, tmp_path: Path, shape) -> None:
    with pytest.raises(tflite.ConversionError, match="4 positive ints"):
        tflite.convert(tiny, shape, tmp_path / "x.tflite")


def test_unsupported_precision(tiny: TinySR, tmp_path: Path) -> None:
    with pytest.raises(tflite.ConversionError, match="fp32"):
        tflite.convert(tiny, (1, 3, 12, 16), tmp_path / "x.tflite", precision="int8")


def test_op_histogram_rejects_other_files(tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(UserError, match="not a LiteRT"):
        tflite.op_histogram(bogus)


def test_run_tflite_checks_shape(converted: Path) -> None:
    with pytest.raises(ValueError, match=r"takes input shape \(1, 3, 12, 16\)"):
        tflite.run_tflite(converted, np.zeros((1, 3, 8, 8), np.float32))


class PReLUSR(nn.Module):
    """Per-channel and shared-slope PReLUs between convs, x2 pixel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.PReLU(8)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.PReLU()  # one slope for all channels
        self.tail = nn.Conv2d(8, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        with torch.no_grad():  # distinct slopes, so a swapped or dropped slope shows
            self.act1.weight.copy_(torch.linspace(0.05, 0.6, 8))
            self.act2.weight.fill_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.act2(self.body(self.act1(self.head(x))))))


@pytest.mark.parametrize("layout", ["nhwc-d2s", "nhwc", "nchw"])
def test_prelu_lowers_to_one_op(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(0)
    model = PReLUSR().eval()
    kw = {"channels_last_io": layout != "nchw", "depth_to_space": layout == "nhwc-d2s"}
    native = tflite.convert(model, (1, 3, 12, 16), tmp_path / "native.tflite", **kw)
    plain = tflite.convert(model, (1, 3, 12, 16), tmp_path / "plain.tflite", **kw,
                           native_prelu=False)
    ops, decomposed = tflite.op_histogram(native), tflite.op_histogram(plain)
    assert ops["PRELU"] == 2 and not {"RELU", "SUB", "MUL"} & set(ops)
    assert decomposed["MUL"] == 4 and "PRELU" not in decomposed  # litert-torch's own lowering
    # Nothing else changes: the permutes around the NHWC op cancel (no extra TRANSPOSE).
    assert {k: v for k, v in ops.items() if k != "PRELU"} == {
        k: v for k, v in decomposed.items() if k not in ("RELU", "SUB", "MUL")
    }
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    x = x.permute(0, 2, 3, 1).numpy() if kw["channels_last_io"] else x.numpy()
    np.testing.assert_allclose(tflite.run_tflite(native, x), tflite.run_tflite(plain, x),
                               atol=1e-5)  # and convert() checked each against PyTorch


def test_prelu_int8_keeps_the_decomposed_form(tmp_path: Path) -> None:
    torch.manual_seed(0)
    calib = [torch.rand(1, 3, 12, 16) for _ in range(4)]
    path = tflite.convert(PReLUSR().eval(), (1, 3, 12, 16), tmp_path / "q.tflite",
                          precision="int8", representative=calib)
    ops = tflite.op_histogram(path)
    assert "PRELU" not in ops and ops["MUL"] == 4  # PT2E quantises the decomposed ops


def test_native_prelu_form_copies_only_when_needed() -> None:
    from srsearch.deploy._prelu import NHWCPReLU, native_prelu_form

    model = PReLUSR()
    swapped = native_prelu_form(model)
    assert isinstance(model.act1, nn.PReLU) and isinstance(swapped.act1, NHWCPReLU)
    assert isinstance(swapped.act2, NHWCPReLU)
    x = torch.rand(2, 3, 5, 7) - 0.5
    torch.testing.assert_close(swapped(x), model(x))
    no_prelu = TinySR()
    assert native_prelu_form(no_prelu) is no_prelu


@pytest.mark.parametrize("skip", ["nearest", "bicubic"])
def test_subnet_skips_export_as_one_conv_each(tmp_path: Path, skip: str) -> None:
    """The bicubic skip is one more CONV_2D (5x5, 3 -> 12), as the nearest one (1x1): the
    exported file computes what PyTorch does (convert() checks) with no other op added."""
    from supernet.space import ArchConfig, CellConfig
    from supernet.subnet import SubNet

    torch.manual_seed(0)
    model = SubNet(ArchConfig(2, 8, (CellConfig("conv", 8),), skip=skip)).eval()
    path = tflite.convert(model, (1, 3, 12, 16), tmp_path / "m.tflite", channels_last_io=True,
                          depth_to_space=True)
    ops = tflite.op_histogram(path)
    assert ops["CONV_2D"] == 4 and ops["DEPTH_TO_SPACE"] == 1  # head, cell, tail, skip
    assert set(ops) <= {"CONV_2D", "ADD", "DEPTH_TO_SPACE"}
