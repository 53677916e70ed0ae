"""srsearch export / srsearch.deploy.tflite_model: checked LiteRT files, GPU screen, exact tiled
eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srsearch.cli import main
from srsearch.common.errors import UserError
from srsearch.deploy import tflite
from srsearch.deploy.export import default_input_size, export_tflite, receptive_field
from srsearch.deploy.resolve import resolve_model
from srsearch.deploy.tflite_model import TFLiteModel, tile_starts
from srsearch.models import build_model, inference_form
from srsearch.models.modelio import save_model

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

SIZE = (24, 16)  # W x H of the LR input of every file here: small, so conversion is quick
CONFIG = {"family": "ecbsr", "scale": 2, "m": 2, "channels": 8}  # 4 plain 3x3 convs: r = 4


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_model(build_model(CONFIG).eval(), tmp_path_factory.mktemp("run") / "model.pt")


def _export(saved: Path, out: Path, *flags: str) -> int:
    return main(
        [
            "export",
            "--tflite",
            str(saved),
            "--out",
            str(out),
            "--input-size",
            "24x16",
            "--val-images",
            "2",
            *flags,
        ]
    )


@pytest.fixture(scope="module")
def fp32(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp32") / "ecbsr.tflite"
    assert _export(saved, out) == 0
    return out


def _pytorch(saved: Path) -> nn.Module:
    model, _ = resolve_model(str(saved), 2)
    return inference_form(model).eval()


def test_fp32_file_matches_pytorch(saved: Path, fp32: Path) -> None:
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(5))
    got = tflite.run_tflite(fp32, x.permute(0, 2, 3, 1).numpy())  # NHWC file
    with torch.no_grad():
        want = _pytorch(saved)(x).permute(0, 2, 3, 1).numpy()
    assert got.shape == (1, 32, 48, 3)
    assert np.max(np.abs(got - want)) < 1e-4


def test_sidecar(fp32: Path) -> None:
    side = json.loads(fp32.with_suffix(".json").read_text())
    assert side["format"] == "srsearch.tflite/1"
    assert side["model_config"] == CONFIG | {"act": "relu", "depth_multiplier": 2.0,
                                             "branch_init": "paper"}
    assert side["inference_config"]["family"] == "plainsr"
    assert (side["scale"], side["precision"], side["layout"]) == (2, "fp32", "nhwc")
    assert side["input_size"] == [24, 16] and side["input_shape"] == [1, 16, 24, 3]
    assert side["receptive_field"] == 4
    # NHWC + DEPTH_TO_SPACE: convs, the skip add, one DEPTH_TO_SPACE, no layout ops at all.
    assert side["pixel_shuffle"] == "DEPTH_TO_SPACE"
    assert side["op_histogram"]["DEPTH_TO_SPACE"] == 1
    assert "TRANSPOSE" not in side["op_histogram"] and "RESHAPE" not in side["op_histogram"]
    assert side["gpu_delegate"] == {"ok": True, "unsupported_ops": {}, "high_rank_tensors": {}}
    for name in ("random", "real"):
        assert side["checks"][name]["ok"] and side["checks"][name]["max_abs_diff"] < 1e-4
    psnr = side["checks"]["psnr_val"]
    assert psnr["images"] == 2 and abs(psnr["drop_db"]) < 0.01


def test_tiled_output_equals_whole_image(saved: Path, fp32: Path) -> None:
    tiled = TFLiteModel(fp32)
    assert tiled.config()["scale"] == 2 and tiled.receptive_field == 4
    x = torch.rand(1, 3, 37, 61, generator=torch.Generator().manual_seed(6))  # 3 x 4 tiles
    with torch.no_grad():
        want = _pytorch(saved)(x)
    got = tiled(x)
    assert got.shape == (1, 3, 74, 122)
    assert float((got - want).abs().max()) < 1e-4


def test_eval_tflite_psnr_equals_pytorch(saved: Path, fp32: Path, tmp_path: Path) -> None:
    # builtin val images (LR 225x150, 300x200) are far larger than the 24x16 tile
    assert main(["eval", str(fp32), "--split", "val", "--json", str(tmp_path / "f.json")]) == 0
    assert main(["eval", str(saved), "--split", "val", "--json", str(tmp_path / "p.json")]) == 0
    file_res = json.loads((tmp_path / "f.json").read_text())
    torch_res = json.loads((tmp_path / "p.json").read_text())
    assert abs(file_res["mean"]["psnr"] - torch_res["mean"]["psnr"]) < 0.01
    assert file_res["images"][0]["size"] == torch_res["images"][0]["size"]


def test_image_smaller_than_tile_is_refused(fp32: Path) -> None:
    with pytest.raises(UserError, match=r"smaller than .* fixed input 24x16"):
        TFLiteModel(fp32)(torch.rand(1, 3, 15, 30))


@pytest.mark.parametrize("length, tile, halo", [(16, 16, 4), (17, 16, 4), (61, 24, 4), (100, 9, 4)])
def test_tile_starts_cover_each_pixel_once(length: int, tile: int, halo: int) -> None:
    spans = tile_starts(length, tile, halo)
    assert spans[0][1] == 0 and spans[-1][2] == length
    for (_, _, end), (_, start, _) in zip(spans, spans[1:], strict=False):
        assert end == start  # kept ranges meet
    for s, a, b in spans:
        assert 0 <= s and s + tile <= length  # tiles inside the image
        assert a - s >= (halo if s > 0 else 0) and s + tile - b >= (halo if b < length else 0)


def test_fp16_runs(saved: Path, fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16.tflite"
    assert _export(saved, out, "--precision", "fp16") == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"] == "fp16"
    assert side["op_histogram"]["DEQUANTIZE"] >= 4  # fp16 weights, dequantised at load
    assert 0 < side["checks"]["real"]["max_abs_diff"] < 1e-2
    assert out.stat().st_size < 0.75 * fp32.stat().st_size


def test_int8_calibrates_and_reports_psnr_drop(saved: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "int8.tflite"
    assert _export(saved, out, "--precision", "int8", "--calib-samples", "4") == 0
    printed = capsys.readouterr().out
    assert "drop" in printed
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["calibration"] == {"split": "train", "samples": 4}
    psnr = side["checks"]["psnr_val"]
    assert f"drop {psnr['drop_db']:.3f} dB" in printed
    # int8 moves PSNR a little either way (a trained ESPCN gained 0.08 dB on builtin val)
    assert psnr["tflite"] > 20 and psnr["drop_db"] != 0.0 and abs(psnr["drop_db"]) < 1.0
    tiled = TFLiteModel(out)
    assert tiled.interpreter.get_input_details()[0]["dtype"] == np.int8  # static: int8 input


class ArgMaxSR(nn.Module):
    """conv + PixelShuffle plus an ARG_MAX (and CAST): ops the GPU delegate lacks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def config(self) -> dict:
        return {"family": "test-argmax", "scale": 2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return F.pixel_shuffle(y + 1e-3 * y.argmax(dim=1, keepdim=True).float(), 2)


def test_unsupported_op_fails_unless_allowed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "argmax.tflite"
    with pytest.raises(UserError, match=r"(?s)ARG_MAX.*not supported.*--allow-cpu-ops"):
        export_tflite(ArgMaxSR(), out, input_size=SIZE, val_images=1, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []  # nothing written, no partial file left
    export_tflite(
        ArgMaxSR(), out, input_size=SIZE, val_images=1, allow_cpu_ops=True, log=lambda s: None
    )
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["gpu_delegate"]["ok"] is False
    assert side["gpu_delegate"]["unsupported_ops"] == {"ARG_MAX": 1, "CAST": 1}


class Rank6Shuffle(nn.Module):
    """A hand-written pixel shuffle: a rank-6 view + permute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        b, _, h, w = y.shape
        y = y.view(b, 3, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(b, 3, h * 2, w * 2)


def test_rank_above_4_is_detected(tmp_path: Path) -> None:
    from srsearch.deploy.export import _gpu_problem

    path = tflite.convert(Rank6Shuffle(), (1, 3, 8, 8), tmp_path / "r6.tflite")
    report = tflite.gpu_report(path)
    assert report.unsupported_ops == {}
    assert sorted(len(s) for s in report.high_rank_tensors.values()) == [6, 6]
    with pytest.raises(UserError, match=r"(?s)rank 6 .*nn\.PixelShuffle"):
        _gpu_problem(report, path, allow=False, log=print)
    # nn.PixelShuffle itself stays within rank 4
    conv = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    ok = tflite.convert(conv, (1, 3, 8, 8), tmp_path / "ps.tflite")
    assert tflite.gpu_report(ok).ok


def test_gpu_op_list_uses_schema_names() -> None:
    from ai_edge_litert import schema_py_generated as schema

    builtin = {n for n in vars(schema.BuiltinOperator) if not n.startswith("_")}
    custom = {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
    assert tflite.GPU_DELEGATE_OPS - custom <= builtin
    assert {"CONV_2D", "DEPTH_TO_SPACE", "TRANSPOSE", "RESHAPE", "TANH"} <= tflite.GPU_DELEGATE_OPS
    assert not {"BROADCAST_TO", "ARG_MAX", "CAST"} & tflite.GPU_DELEGATE_OPS


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_depth_to_space_order_is_pixel_shuffle(scale: int) -> None:
    from srsearch.deploy.depth_to_space import d2s_permutation, depth_to_space

    v = torch.rand(2, 3 * scale * scale, 5, 7)
    perm = d2s_permutation(3, scale)
    via_d2s = depth_to_space(v[:, perm].permute(0, 2, 3, 1), scale).permute(0, 3, 1, 2)
    assert torch.equal(via_d2s, F.pixel_shuffle(v, scale))  # a pure permutation: bit-exact


class SkipSR(nn.Module):
    """Every producer the rewrite folds: conv, PReLU, functional conv, repeat_interleave, a
    constant, scalar ops."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 12, 3, padding=1)
        self.act = nn.PReLU(12)
        self.register_buffer("k", torch.randn(12, 3, 1, 1))
        self.register_buffer("b", torch.randn(1, 12, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.body(x)) + F.conv2d(x, self.k) + x.repeat_interleave(4, dim=1)
        return F.pixel_shuffle(torch.relu(y) * 0.5 + self.b, 2)


def test_depth_to_space_form_is_exact() -> None:
    from srsearch.deploy.depth_to_space import depth_to_space_form

    torch.manual_seed(0)
    model = SkipSR().eval()
    x = torch.rand(1, 3, 6, 9)
    rewritten = depth_to_space_form(model, x)
    targets = [n.target for n in rewritten.graph.nodes]
    assert torch.ops.srsearch.depth_to_space.default in targets
    assert "repeat_interleave" not in targets and torch.cat in targets
    with torch.no_grad():
        assert float((rewritten(x) - model(x)).abs().max()) < 1e-6


def test_receptive_field_and_default_size() -> None:
    torch.manual_seed(0)
    espcn = build_model({"family": "espcn", "scale": 3})  # 5x5, 3x3, 3x3: 2 + 1 + 1
    assert receptive_field(espcn, 3) == 4
    assert receptive_field(inference_form(build_model(CONFIG)), 2) == 4
    assert [default_input_size(s) for s in (2, 3, 4)] == [(640, 360), (427, 240), (320, 180)]


def test_depth_to_space_form_refuses_what_it_cannot_fold() -> None:
    from srsearch.deploy.depth_to_space import depth_to_space_form

    class Rolled(nn.Module):  # a channel roll before the shuffle: no producer to fold into
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.pixel_shuffle(torch.roll(x.repeat(1, 4, 1, 1), 1, dims=1), 2)

    with pytest.raises(tflite.ConversionError, match=r"cannot fold .*roll"):
        depth_to_space_form(Rolled(), torch.rand(1, 3, 4, 4))


def test_export_never_writes_over_its_input(tmp_path: Path, capsys) -> None:
    """The probe: `export --tflite cfg.json --out cfg.tflite` would write the sidecar cfg.json
    over the config it exports; it is refused before any conversion, the config untouched."""
    from srsearch.models import preset_config

    cfg = tmp_path / "cfg.json"
    text = json.dumps(preset_config("espcn", 2))
    cfg.write_text(text)
    assert main(["export", "--tflite", str(cfg), "--out", str(tmp_path / "cfg.tflite")]) == 2
    err = capsys.readouterr().err
    assert f"its sidecar {cfg} would overwrite the model it exports" in err
    assert cfg.read_text() == text and not (tmp_path / "cfg.tflite").exists()
    with pytest.raises(UserError, match="would overwrite the model it exports"):  # pipeline
        export_tflite(build_model(preset_config("espcn", 2)), tmp_path / "cfg.tflite",
                      source=str(cfg))
    assert cfg.read_text() == text
