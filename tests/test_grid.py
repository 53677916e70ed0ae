"""srsearch.evaluation.grid: crop grids labelled with whole-image PSNR and measured latency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srsearch.data.datasets import bicubic_upscale, load_images
from srsearch.evaluation.evaluate import evaluate
from srsearch.evaluation.grid import (
    best_within_budget,
    detailed_window,
    grid_rows,
    panel_title,
    report_grid,
)
from srsearch.models import build_model, preset_config


def test_best_baseline_is_the_best_psnr_within_the_budget():
    psnr = {"bicubic": 30.0, "searched": 33.0, "slow": 34.0, "fast": 32.0, "faster": 31.0}
    latency = {"searched": 9.0, "slow": 50.0, "fast": 8.0, "faster": 4.0}
    assert best_within_budget(psnr, latency, 10.0) == "fast"
    assert best_within_budget(psnr, latency, 5.0) == "faster"
    assert best_within_budget(psnr, latency, 1.0) is None
    assert best_within_budget(psnr, {}, 1.0) == "slow"  # nothing measured yet: by PSNR


def test_detailed_window_finds_the_edges():
    lr = np.full((40, 60, 3), 128, np.uint8)
    lr[20:, 40:] = 0  # one corner of detail
    y, x = detailed_window(lr, 16)
    assert y <= 20 < y + 16 and x <= 40 < x + 16


def test_grid_rows_psnr_is_the_evaluation_psnr(image_dir, tmp_path):
    images = load_images(str(image_dir), 2, "all")[:2]
    torch.manual_seed(0)
    espcn = build_model(preset_config("espcn", 2)).eval()
    rows = grid_rows(images, {"espcn": espcn}, 2, {"espcn": 3.5}, crop_lr=20)
    assert [r["image"] for r in rows] == [i.name for i in images]
    result = evaluate(espcn, images, 2)["images"]
    for row, img, res in zip(rows, images, result, strict=True):
        hr, bic, model = row["panels"]
        assert [p["label"] for p in row["panels"]] == ["HR", "bicubic", "espcn"]
        x, y, w, h = row["box_hr"]
        assert w == h == 40 and np.array_equal(hr["crop"], img.hr[y : y + h, x : x + w])
        assert np.array_equal(bic["crop"], bicubic_upscale(img.lr, 2)[y : y + h, x : x + w])
        assert bic["psnr"] == pytest.approx(res["psnr_bicubic"])
        assert model["psnr"] == pytest.approx(res["psnr"]) and model["latency_ms"] == 3.5
        assert hr["psnr"] is None and bic["latency_ms"] is None
    first = rows[0]["panels"][2]
    assert panel_title(first) == f"espcn\n{first['psnr']:.2f} dB, 3.5 ms"
    assert panel_title(rows[0]["panels"][0]) == "HR"


def test_report_grid_writes_the_png_and_its_markdown(image_dir, tmp_path):
    images = load_images(str(image_dir), 2, "all")
    models = {n: build_model(preset_config(n, 2)).eval() for n in ("espcn", "ecbsr-m4c8")}
    models["searched"] = build_model(preset_config("fsrcnn-s", 2)).eval()
    psnr = {"espcn": 30.0, "ecbsr-m4c8": 29.0, "searched": 31.0}
    latency = {"espcn": 40.0, "ecbsr-m4c8": 10.0, "searched": 12.0}
    out = report_grid(images, models, psnr, latency, 20.0, 2, tmp_path / "crops.png")
    assert out["best_baseline"] == "ecbsr-m4c8"  # espcn is better but over the budget
    assert len(out["images"]) == 2
    assert [p["label"] for p in out["images"][0]["panels"]] == [
        "HR", "bicubic", "ecbsr-m4c8", "searched"]
    assert (tmp_path / "crops.png").read_bytes()[:4] == b"\x89PNG"
    assert "![Crops" in "\n".join(out["markdown"]) and "(crops.png)" in out["markdown"][2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops.png", "photos"]  # no temp file
    none = report_grid(images, models, psnr, latency, 5.0, 2, tmp_path / "crops.png")
    assert none["best_baseline"] is None and "no baseline was measured" in none["markdown"][0]
    assert [p["label"] for p in none["images"][0]["panels"]] == ["HR", "bicubic", "searched"]
