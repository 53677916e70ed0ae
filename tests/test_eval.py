import json

import numpy as np

from srsearch.cli import main
from srsearch.data.datasets import bicubic_upscale, load_images
from srsearch.evaluation.metrics import calculate_psnr


def test_eval_bicubic_prints_and_writes_json(image_dir, tmp_path, capsys):
    out = tmp_path / "bic.json"
    assert main(["eval", "bicubic", "--data", str(image_dir), "--scale", "2",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    images = load_images(str(image_dir), 2, "all")
    assert [r["name"] for r in result["images"]] == [i.name for i in images]
    expected = np.mean([calculate_psnr(bicubic_upscale(i.lr, 2), i.hr, 2) for i in images])
    # the bicubic module reproduces Pillow's bicubic to within its 8-bit rounding
    assert abs(result["mean"]["psnr_bicubic"] - expected) < 1e-9
    assert abs(result["mean"]["psnr"] - expected) < 0.02
    text = capsys.readouterr().out
    assert "mean" in text and f"{expected:.3f}"[:-1] in text


def test_eval_rejects_scale_mismatch(image_dir, tmp_path, capsys):
    from srsearch.models import build_model, preset_config
    from srsearch.models.modelio import save_model

    path = save_model(build_model(preset_config("espcn", 3)), tmp_path / "m.pt")
    assert main(["eval", str(path), "--data", str(image_dir), "--scale", "2"]) == 2
    assert "is x3 but --scale is 2" in capsys.readouterr().err


def test_exact_match_is_capped_and_json_is_standard(tmp_path):
    """The probe: a flat image gave PSNR inf, written to JSON as Infinity."""
    from PIL import Image

    d = tmp_path / "flat"
    d.mkdir()
    Image.fromarray(np.full((48, 48, 3), 120, np.uint8)).save(d / "flat.png")
    out = tmp_path / "e.json"
    assert main(["eval", "bicubic", "--data", str(d), "--json", str(out)]) == 0
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["mean"]["psnr"] == 100.0


def test_super_resolve_takes_read_only_images_without_warning(image_dir):
    import warnings

    from srsearch.evaluation.evaluate import super_resolve
    from srsearch.models import build_model, preset_config

    img = load_images(str(image_dir), 2, "val")[0]
    assert not img.lr.flags.writeable  # dataset images are shared, hence read-only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy's "not writable" would raise
        sr = super_resolve(build_model(preset_config("bicubic", 2)), img.lr)
    assert sr.shape == img.hr.shape
    assert calculate_psnr(sr, bicubic_upscale(img.lr, 2), 2) > 45  # the module is bicubic
