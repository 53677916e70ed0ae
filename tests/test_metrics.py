import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from srsearch.evaluation.metrics import (
    PSNR_CAP_DB,
    calculate_psnr,
    calculate_ssim,
    rgb_to_y,
    tensor_to_uint8,
)


def test_y_channel_endpoints_and_weights():
    black = np.zeros((1, 1, 3), np.uint8)
    white = np.full((1, 1, 3), 255, np.uint8)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(white)[0, 0] == pytest.approx(16.0 + 65.481 + 128.553 + 24.966)  # 235
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert rgb_to_y(red)[0, 0] == pytest.approx(16.0 + 65.481)


def test_psnr_constant_offset_by_hand():
    a = np.full((10, 12, 3), 100, np.uint8)
    b = a + 1
    # Y differs by (65.481 + 128.553 + 24.966) / 255 = 219 / 255 everywhere
    dy = 219.0 / 255.0
    assert calculate_psnr(a, b, 2) == pytest.approx(20 * math.log10(255.0 / dy), abs=1e-9)
    assert calculate_psnr(a, b, 2, test_y_channel=False) == pytest.approx(
        20 * math.log10(255.0), abs=1e-9
    )


def test_psnr_shaves_border():
    a = np.full((10, 10, 3), 50, np.uint8)
    b = a.copy()
    b[:2] = 200  # only the 2-pixel border differs
    b[:, -2:] = 0
    assert calculate_psnr(a, b, 2) == PSNR_CAP_DB  # identical after the shave
    assert calculate_psnr(a, b, 1) < 20


def test_exact_match_is_a_finite_capped_psnr():
    """The probe: a flat image reproduced exactly gave inf, written to JSON as Infinity."""
    a = np.full((16, 16, 3), 128, np.uint8)
    assert PSNR_CAP_DB == 100.0
    assert calculate_psnr(a, a.copy(), 2) == 100.0 and calculate_psnr(a, a, 0, False) == 100.0
    big = np.full((600, 600, 3), 128, np.uint8)
    near = big.copy()
    near[300, 300, 0] = 129  # 108.4 dB by the formula: reported at the cap
    assert calculate_psnr(big, near, 2, test_y_channel=False) == 100.0
    near[300:310, 300:310] = 140  # a real difference is unaffected
    assert 60 < calculate_psnr(big, near, 2, test_y_channel=False) < 100


def test_psnr_one_pixel_by_hand():
    a = np.zeros((6, 6, 3), np.uint8)
    b = a.copy()
    b[3, 3] = (10, 10, 10)  # inside the 4x4 region left after shaving 1
    dy = 10 * 219.0 / 255.0
    mse = dy**2 / 16
    assert calculate_psnr(a, b, 1) == pytest.approx(10 * math.log10(255.0**2 / mse), abs=1e-9)


def _ssim_by_formula(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 with an 11x11 Gaussian (sigma 1.5), K1=0.01, K2=0.03, L=255."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda t: gaussian_filter(t, 1.5, truncate=3.5)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m[5:-5, 5:-5].mean())  # skimage drops the window's half-width at the border


def test_ssim_matches_the_formula_and_identity():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, a.shape)
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y(a)[3:-3, 3:-3], rgb_to_y(b)[3:-3, 3:-3]
    assert calculate_ssim(a, b, 3) == pytest.approx(_ssim_by_formula(ya, yb), abs=1e-6)
    assert calculate_ssim(a, a, 3) == pytest.approx(1.0)
    assert 0.0 < calculate_ssim(a, b, 3) < 0.99


def test_tensor_to_uint8_clamps_and_rounds():
    t = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.49 / 255, 1.0, 2.0]).view(1, 1, 6).expand(3, 1, 6)
    out = tensor_to_uint8(t)
    assert out.shape == (1, 6, 3) and out.dtype == np.uint8
    # 0.5/255 rounds half to even -> 0; 1.49/255 -> 1
    assert out[0, :, 0].tolist() == [0, 0, 0, 1, 255, 255]


def test_bad_inputs_named():
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="img2 must be a uint8 RGB"):
        calculate_psnr(a, a.astype(np.float32), 2)
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(a, np.zeros((8, 9, 3), np.uint8), 2)


def test_score_sr_rounds_to_uint8_then_scores_like_the_metrics():
    import torch

    from srsearch.evaluation.metrics import (
        calculate_psnr,
        calculate_ssim,
        score_sr,
        tensor_to_uint8,
    )

    g = torch.Generator().manual_seed(0)
    sr, hr = torch.rand(3, 24, 20, generator=g), torch.rand(3, 24, 20, generator=g)
    out, ref = tensor_to_uint8(sr), tensor_to_uint8(hr)
    want = (calculate_psnr(out, ref, 2), calculate_ssim(out, ref, 2))
    assert score_sr(sr, hr, 2) == want  # tensor HR
    assert score_sr(sr[None], ref, 2) == want  # batch of one, uint8 HR
    psnr, ssim = score_sr(sr, ref, 2, ssim=False)
    assert psnr == want[0] and ssim != ssim  # NaN
