"""Shared fixtures: small synthetic photo-like datasets, made on the fly (no downloads)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SUN80 = ROOT.parent / "shared" / "datasets" / "sun80"


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A natural-ish uint8 RGB image: smooth colour gradients, blobs and some edges."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.01, 0.08, 2).tolist() + [rng.uniform(0, 6.3)]
        img[..., c] = 128 + 60 * np.sin(fx * xx + ph) * np.cos(fy * yy)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, min(h, w) / 3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Eight 64x72 PNGs: split 7 train / 1 val."""
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(8):
        Image.fromarray(smooth_image(rng, 64, 72)).save(d / f"img{i:02d}.png")
    return d


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running the CLI in a subprocess with this interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("SRSEARCH_CACHE", str(ROOT / ".pytest_cache" / "srsearch-cache"))
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "srsearch.cli", *args]
