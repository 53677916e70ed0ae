"""Per-image and mean PSNR/SSIM of a model, with Pillow-bicubic alongside."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srsearch.common import atomic
from srsearch.evaluation.metrics import calculate_psnr, calculate_ssim, tensor_to_uint8


@torch.no_grad()
def super_resolve(model: nn.Module, lr: np.ndarray) -> np.ndarray:
    """Run ``model`` on one uint8 RGB LR image; returns the uint8 RGB SR image."""
    # a float copy: dataset images are read-only, which torch.from_numpy warns about
    x = torch.from_numpy(np.array(lr, dtype=np.float32)).permute(2, 0, 1).div(255.0).unsqueeze(0)
    return tensor_to_uint8(model(x))


def evaluate(model: nn.Module, images: list, scale: int, *, rgb: bool = False,
             progress: bool = False) -> dict[str, Any]:
    """Score ``model`` on ``images`` (``SRImage`` list). Border shave = scale, Y channel unless
    ``rgb``. Returns ``{"images": [...], "mean": {...}}`` with model and bicubic figures."""
    from srsearch.data.datasets import bicubic_upscale

    rows = []
    it = images
    if progress:
        from rich.progress import track

        it = track(images, description="evaluating", transient=True)
    for img in it:
        sr = super_resolve(model, img.lr)
        bic = bicubic_upscale(img.lr, scale)
        rows.append({
            "name": img.name,
            "size": [int(img.hr.shape[1]), int(img.hr.shape[0])],
            "psnr": calculate_psnr(sr, img.hr, scale, not rgb),
            "ssim": calculate_ssim(sr, img.hr, scale, not rgb),
            "psnr_bicubic": calculate_psnr(bic, img.hr, scale, not rgb),
            "ssim_bicubic": calculate_ssim(bic, img.hr, scale, not rgb),
        })
    keys = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic")
    mean = {k: float(np.mean([r[k] for r in rows])) if rows else math.nan for k in keys}
    return {"channel": "rgb" if rgb else "y", "scale": scale, "images": rows, "mean": mean}


def format_table(result: dict[str, Any], model_name: str) -> str:
    """Plain-text table: one row per image and the mean."""
    head = f"{'image':<28}{'PSNR':>8}{'SSIM':>8}{'bic PSNR':>10}{'bic SSIM':>10}"
    lines = [f"{model_name} x{result['scale']} ({result['channel'].upper()} channel)", head]
    for r in result["images"] + [{"name": "mean", **result["mean"]}]:
        lines.append(f"{r['name'][:27]:<28}{r['psnr']:>8.3f}{r['ssim']:>8.4f}"
                     f"{r['psnr_bicubic']:>10.3f}{r['ssim_bicubic']:>10.4f}")
    return "\n".join(lines)


def evaluate_models(
    models: Mapping[str, nn.Module],
    sets: Sequence[tuple[str, list]],
    scale: int,
    out_dir: Path,
    on_result: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Score every model on every (name, images) set; writes ``out_dir/<model>__<set>.json``
    per pair and calls ``on_result(set, model, mean)``. Returns {set: {model: mean}}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for set_name, images in sets:
        for name, model in models.items():
            res = evaluate(model, images, scale)
            atomic.write_json(Path(out_dir) / f"{name}__{_slug(set_name)}.json", res)
            table.setdefault(set_name, {})[name] = res["mean"]
            if on_result is not None:
                on_result(set_name, name, res["mean"])
    return table


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
