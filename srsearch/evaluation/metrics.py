"""PSNR and SSIM on the conventions that published SR tables use.

Inputs are uint8 RGB images (H, W, 3). By default both metrics are computed on the luma (Y) channel
of ITU-R BT.601 on 0-255 values, ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (R, G, B in
0-255, Y not rounded), after shaving ``crop_border`` pixels (= the scale) from each side. Model
output must be clamped and rounded to uint8 before it gets here: see :func:`tensor_to_uint8`.

PSNR is capped at ``PSNR_CAP_DB`` = 100 dB: identical images (MSE 0) report 100 dB, not
``inf``, so a mean over images stays finite and result files stay standard JSON. 100 dB is an
MSE of 6.5e-6 grey levels squared, far above any real reconstruction (30-40 dB).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

PSNR_CAP_DB = 100.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 RGB image, as float64 in the 16-235 range."""
    _check_rgb_uint8(img, "img")
    return 16.0 + img.astype(np.float64) @ _Y_WEIGHTS


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """Model output (3, H, W) or (1, 3, H, W) in [0, 1] -> (H, W, 3) uint8: clamp, scale, round."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    arr = t.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def score_sr(sr: torch.Tensor, hr: np.ndarray | torch.Tensor, scale: int, *, ssim: bool = True,
             test_y_channel: bool = True) -> tuple[float, float]:
    """PSNR and SSIM (NaN when ``ssim`` is False) of one model output against its HR image.

    The one scoring step of training, search and export checks: ``sr`` (3, H, W) or
    (1, 3, H, W) in [0, 1] is
    clamped and rounded to uint8 (`tensor_to_uint8`) before any metric; ``hr`` is the uint8
    RGB image or a tensor like ``sr``. Border shave = ``scale``; Y channel unless told.
    """
    out = tensor_to_uint8(sr)
    ref = tensor_to_uint8(hr) if isinstance(hr, torch.Tensor) else hr
    psnr = calculate_psnr(out, ref, scale, test_y_channel)
    return psnr, (calculate_ssim(out, ref, scale, test_y_channel) if ssim else float("nan"))


def _prepare(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool):
    _check_rgb_uint8(img, "img")
    _check_rgb_uint8(img2, "img2")
    if img.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {img2.shape}")
    if test_y_channel:
        a, b = rgb_to_y(img), rgb_to_y(img2)
    else:
        a, b = img.astype(np.float64), img2.astype(np.float64)
    if crop_border > 0:
        if min(a.shape[:2]) <= 2 * crop_border:
            raise ValueError(f"image {a.shape[:2]} too small to shave a border of {crop_border}")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def calculate_psnr(
    img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool = True
) -> float:
    """PSNR in dB between two uint8 RGB images (peak 255), capped at ``PSNR_CAP_DB``
    (identical images give 100 dB, not ``inf``)."""
    a, b = _prepare(img, img2, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def calculate_ssim(
    img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool = True
) -> float:
    """SSIM with the 11x11 Gaussian window (sigma 1.5) of Wang et al., through scikit-image.

    ``use_sample_covariance=False`` and ``data_range=255`` reproduce the reference MATLAB code. RGB
    SSIM (``test_y_channel=False``) is the mean over the three channels.
    """
    a, b = _prepare(img, img2, crop_border, test_y_channel)
    kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0)
    if a.ndim == 2:
        return float(structural_similarity(a, b, **kwargs))
    return float(structural_similarity(a, b, channel_axis=2, **kwargs))


def _check_rgb_uint8(img: np.ndarray, name: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 \
            or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{name} must be a uint8 RGB array (H, W, 3), got {desc}")
