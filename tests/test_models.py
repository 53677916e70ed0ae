import json

import numpy as np
import pytest
import torch
from PIL import Image

from srsearch.common.errors import UserError
from srsearch.evaluation.metrics import calculate_psnr
from srsearch.models import build_model, inference_form, preset_config, presets
from srsearch.models.ecbsr import ECBSR, ECBSRConfig
from srsearch.models.modelio import load_model_file, save_model


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", presets())
def test_every_preset_builds_upscales_and_round_trips(name, scale):
    cfg = preset_config(name, scale)
    model = build_model(json.loads(json.dumps(cfg))).eval()
    assert build_model(json.loads(json.dumps(model.config()))).config() == model.config()
    x = torch.rand(2, 3, 11, 14)
    y = model(x)
    assert y.shape == (2, 3, 11 * scale, 14 * scale)
    again = build_model(model.config())
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval()(x), y)


def _perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("m,c,act", [(4, 16, "relu"), (2, 8, "prelu"), (0, 12, "relu")])
def test_ecbsr_collapse_is_exact(scale, m, c, act):
    model = ECBSR(ECBSRConfig(scale=scale, m=m, channels=c, act=act)).eval()
    _perturb(model)  # the identity-ish init would hide mistakes
    plain = inference_form(model)
    assert type(plain).__name__ == "PlainSR"
    assert all(type(mod).__name__ in ("Conv2d", "ReLU", "PReLU") for mod in plain.body)
    x = torch.rand(1, 3, 17, 13)
    ref = model(x)
    assert ref.abs().max() > 0.1
    # float32: equal up to summation order
    assert (plain(x) - ref).abs().max() <= 1e-5 * ref.abs().max()
    # float64: the algebra is exact
    model64, x64 = model.double(), x.double()
    torch.testing.assert_close(inference_form(model64)(x64), model64(x64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_module_matches_pillow(scale):
    rng = np.random.default_rng(scale)
    lr = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    lr = np.array(Image.fromarray(lr).filter(__import__("PIL.ImageFilter").ImageFilter.SMOOTH))
    pil = np.array(Image.fromarray(lr).resize((23 * scale, 19 * scale), Image.BICUBIC))
    model = build_model(preset_config("bicubic", scale))
    x = torch.from_numpy(lr).permute(2, 0, 1).float().div(255).unsqueeze(0)
    out = model(x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - pil.astype(int)).max() <= 1  # Pillow rounds in fixed point
    ref = np.array(Image.fromarray(lr).resize((23, 19)))  # any reference image
    ref = np.array(Image.fromarray(ref).resize((23 * scale, 19 * scale), Image.NEAREST))
    assert abs(calculate_psnr(out, ref, scale) - calculate_psnr(pil, ref, scale)) < 0.01


def test_model_file_round_trip_weights_only(tmp_path):
    model = build_model(preset_config("ecbsr-m4c8", 3))
    _perturb(model)
    path = save_model(model, tmp_path / "model.pt", extra={"note": "x"})
    payload = torch.load(path, weights_only=True)  # loads without pickled modules
    assert payload["format"] == "srsearch.model/1"
    loaded, extra = load_model_file(path)
    assert extra == {"note": "x"}
    x = torch.rand(1, 3, 9, 9)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="unknown architecture 'espcm'.*espcn"):
        preset_config("espcm", 2)
    with pytest.raises(UserError, match="unknown keys \\['depth'\\]"):
        build_model({"family": "espcn", "scale": 2, "depth": 3})
    with pytest.raises(UserError, match="known families"):
        build_model({"family": "nope", "scale": 2})


@pytest.mark.parametrize("scale", [2, 3])
def test_espcn_skip_adds_nearest_upsampling(scale):
    with_skip = build_model(preset_config("espcn", scale)).eval()
    paper = build_model(preset_config("espcn-paper", scale)).eval()
    assert with_skip.config()["skip"] and not paper.config()["skip"]
    paper.load_state_dict(with_skip.state_dict())  # the skip has no weights
    x = torch.rand(1, 3, 5, 7)
    nearest = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    torch.testing.assert_close(with_skip(x) - paper(x), nearest)
