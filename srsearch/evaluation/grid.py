"""Crop grids for reports: what the searched model looks like next to what it competes with.

One row per validation image, one column per panel: the HR crop, bicubic, the best baseline
that runs within the latency budget, and the searched model. Each panel is labelled with the
model's Y-PSNR on the whole image (the `srsearch eval` convention: BT.601 luma, shave = scale,
output rounded to uint8) and its measured latency. The crop is the window of the LR image with
the most detail (gradient energy), so the panels show edges rather than sky.

`report.md` (`srsearch.pipeline`), `compare.md` (`srsearch.comparison.compare`) and
`notebooks/evaluate.ipynb` draw the same grid with these functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

SEARCHED = "searched"


def best_within_budget(
    psnr: Mapping[str, float],
    latency: Mapping[str, float | None],
    budget_ms: float,
    exclude: Sequence[str] = (SEARCHED, "bicubic"),
) -> str | None:
    """The baseline with the highest ``psnr`` among those measured at or under ``budget_ms``
    (None when none is). With no latency measured at all (no benchmark yet), the best by PSNR.
    """
    names = [n for n in psnr if n not in exclude]
    if any(latency.get(n) is not None for n in names):
        names = [n for n in names if latency.get(n) is not None and latency[n] <= budget_ms]
    return max(names, key=lambda n: psnr[n]) if names else None


def detailed_window(lr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``size`` x ``size`` LR window with the largest gradient energy."""
    g = lr.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
    step = max(1, size // 4)
    ys = range(0, max(1, energy.shape[0] - size + 1), step)
    xs = range(0, max(1, energy.shape[1] - size + 1), step)
    return max(
        ((y, x) for y in ys for x in xs),
        key=lambda yx: energy[yx[0] : yx[0] + size, yx[1] : yx[1] + size].sum(),
    )


def grid_rows(
    images: Sequence[Any],
    models: Mapping[str, nn.Module],
    scale: int,
    latency: Mapping[str, float | None] | None = None,
    crop_lr: int = 48,
) -> list[dict[str, Any]]:
    """The panels of each image (an `SRImage`): HR, bicubic, then ``models`` in their order.

    Returns one dict per image: ``image``, ``box_hr`` (x, y, width, height of the crop in HR
    pixels) and ``panels``, a list of {label, psnr (None for HR), latency_ms, crop (uint8)}.
    """
    from srsearch.data.datasets import bicubic_upscale
    from srsearch.evaluation.evaluate import super_resolve
    from srsearch.evaluation.metrics import calculate_psnr

    latency = latency or {}
    rows = []
    for img in images:
        size = min(crop_lr, *img.lr.shape[:2])
        y, x = detailed_window(img.lr, size)
        s = scale
        ys, xs = slice(y * s, (y + size) * s), slice(x * s, (x + size) * s)
        outputs = {"bicubic": bicubic_upscale(img.lr, s)}
        outputs |= {name: super_resolve(m, img.lr) for name, m in models.items()}
        panels = [{"label": "HR", "psnr": None, "latency_ms": None, "crop": img.hr[ys, xs]}]
        for name, sr in outputs.items():
            panels.append({
                "label": name,
                "psnr": calculate_psnr(sr, img.hr, s),
                "latency_ms": latency.get(name),
                "crop": sr[ys, xs],
            })
        rows.append({"image": img.name, "box_hr": [x * s, y * s, size * s, size * s],
                     "panels": panels})
    return rows


def panel_title(panel: Mapping[str, Any]) -> str:
    """``searched`` / ``33.12 dB, 22.6 ms``: what a panel is labelled with."""
    parts = []
    if panel["psnr"] is not None:
        parts.append(f"{panel['psnr']:.2f} dB")
    if panel["latency_ms"] is not None:
        parts.append(f"{panel['latency_ms']:.1f} ms")
    return panel["label"] + ("\n" + ", ".join(parts) if parts else "")


def draw_grid(rows: Sequence[Mapping[str, Any]], title: str = "") -> Any:
    """A matplotlib Figure of ``rows`` (from `grid_rows`)."""
    import matplotlib.pyplot as plt

    ncols = max(len(r["panels"]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 3.0 * len(rows) + 0.4),
                             squeeze=False, layout="constrained")
    for ax_row, row in zip(axes, rows, strict=True):
        for ax, panel in zip(ax_row, row["panels"], strict=False):
            ax.imshow(panel["crop"], interpolation="nearest")
            ax.set_title(panel_title(panel), fontsize=9)
        for ax in ax_row:
            ax.axis("off")
        x, y, w, h = row["box_hr"]
        ax_row[0].text(0, -0.02, f"{row['image']} ({x},{y}) {w}x{h}", fontsize=7,
                       transform=ax_row[0].transAxes, va="top")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_grid(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Draw ``rows`` into the PNG ``path`` (written to a temporary file, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial.png")
    fig = draw_grid(rows, title)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without the pixels: for JSON."""
    return [
        {**{k: v for k, v in r.items() if k != "panels"},
         "panels": [{k: v for k, v in p.items() if k != "crop"} for p in r["panels"]]}
        for r in rows
    ]


def report_grid(
    images: Sequence[Any],
    models: Mapping[str, nn.Module],
    psnr: Mapping[str, float],
    latency: Mapping[str, float | None],
    budget_ms: float,
    scale: int,
    path: Path,
    n_images: int = 2,
) -> dict[str, Any]:
    """The grid of a run's report: the first ``n_images`` of ``images``, panels HR, bicubic,
    the best of ``models``' baselines within ``budget_ms`` (by mean ``psnr``; left out when no
    baseline is measured that fast) and the searched model. Writes ``path``; returns
    {best_baseline, markdown (the lines that show it), images (`summary`)}."""
    best = best_within_budget(psnr, latency, budget_ms)
    chosen = {n: models[n] for n in (best, SEARCHED) if n is not None and n in models}
    rows = grid_rows(images[:n_images], chosen, scale, latency)
    save_grid(rows, path, f"x{scale}, budget {budget_ms:g} ms: whole-image Y-PSNR, "
                          "measured latency")
    why = (f"{best}, the best baseline at or under {budget_ms:g} ms" if best else
           f"no baseline was measured at or under {budget_ms:g} ms")
    markdown = [
        f"Crops of {len(rows)} validation image(s): HR, bicubic, {why}, and the searched model "
        "(whole-image Y-PSNR, measured latency).",
        "",
        f"![Crops: HR, bicubic, best baseline within budget, searched]({Path(path).name})",
        "",
    ]
    return {"best_baseline": best, "markdown": markdown, "images": summary(rows)}
