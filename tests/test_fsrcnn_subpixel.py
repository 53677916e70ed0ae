"""FSRCNN.collapse(): the transposed conv as an exact conv + pixel shuffle that LiteRT takes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srsearch.models import build_model, inference_form, preset_config
from srsearch.models.fsrcnn import FSRCNN, FSRCNNConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")


def _random_fsrcnn(scale: int, seed: int = 0, **kw) -> FSRCNN:
    model = FSRCNN(FSRCNNConfig(scale=scale, **kw)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # random deconv weights and bias (the init's zero bias and tiny weights hide mistakes),
        # outputs of image scale (~0.5) so 1e-5 is a float32 rounding bound
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("hw", [(7, 9), (12, 10)])
@pytest.mark.parametrize("skip", [False, True])
def test_collapse_is_exact(scale, hw, skip):
    model = _random_fsrcnn(scale, seed=scale, d=16, s=6, m=2, skip=skip)
    sub = inference_form(model)
    assert type(sub).__name__ == "FSRCNNSubpixel"
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in sub.modules())
    assert sub.conv.stride == (1, 1) and sub.conv.out_channels == 3 * scale * scale
    assert isinstance(sub.shuffle, nn.PixelShuffle) and sub.shuffle.upscale_factor == scale
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        got = sub(x)
    assert got.shape == ref.shape == (2, 3, hw[0] * scale, hw[1] * scale)
    assert 0.1 < ref.abs().max() < 5
    assert (got - ref).abs().max() <= 1e-5
    # float64 (collapsed from the float64 model): the rearrangement itself is exact
    model64, x64 = model.double(), x.double()
    sub64 = inference_form(model64)
    assert sub64.conv.weight.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(sub64(x64), model64(x64), atol=1e-10, rtol=0)


def test_collapse_copies_and_keeps_mode():
    model = build_model(preset_config("fsrcnn", 2))
    sub = model.collapse()
    assert sub.training == model.training
    with torch.no_grad():
        sub.body[0].weight.add_(1.0)  # the collapsed body is a copy, not shared
    assert not torch.equal(sub.body[0].weight, model.body[0].weight)


def test_collapsed_fsrcnn_converts_to_one_depth_to_space(tmp_path):
    from srsearch.deploy import tflite
    from srsearch.deploy.depth_to_space import depth_to_space_form

    model = _random_fsrcnn(2, d=16, s=6, m=1)
    sub = inference_form(model).eval()
    shape = (1, 3, 8, 12)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    depth_to_space_form(sub, x)  # the shuffle folds into the conv (no ConversionError)
    path = tflite.convert(
        sub, shape, tmp_path / "fsrcnn.tflite", channels_last_io=True, depth_to_space=True
    )
    ops = tflite.op_histogram(path)
    assert ops.get("DEPTH_TO_SPACE") == 1
    assert "TRANSPOSE_CONV" not in ops and "TRANSPOSE" not in ops
    got = tflite.run_tflite(path, x.permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        want = model(x).permute(0, 2, 3, 1).numpy()
    assert abs(got - want).max() < 1e-4
