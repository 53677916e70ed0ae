"""srsearch.common.atomic: result files get the umask's permissions and are standard JSON."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from srsearch.common import atomic


@pytest.fixture
def umask():
    """Set a umask for the test, restore the old one after."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_umask_permissions_not_0600(tmp_path, umask, mask, mode):
    umask(mask)
    for path in (atomic.write_text(tmp_path / "a.md", "x"),
                 atomic.write_json(tmp_path / "b.json", {"a": 1})):
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.umask(mask) == mask  # writing left the umask as it was


def test_json_has_no_nan_or_infinity(tmp_path):
    obj = {"psnr": math.inf, "ssim": math.nan, "rows": [1.5, -math.inf, (np.float64("nan"),)],
           "ok": 2.0}
    path = atomic.write_json(tmp_path / "r.json", obj)
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"psnr": None, "ssim": None, "rows": [1.5, None, [None]],
                                "ok": 2.0}


def test_metrics_json_goes_through_atomic(tmp_path, image_dir):
    """metrics.json is compare's 'baseline trained' marker: written atomically, standard JSON
    even when a metric is missing (NaN in memory)."""
    from srsearch.cli import main

    out = tmp_path / "run"
    assert main(["train", "--arch", "espcn", "--data", str(image_dir), "--max-steps", "2",
                 "--val-every", "2", "--out", str(out), "--batch-size", "2",
                 "--lr-patch", "8"]) == 0
    assert not list(out.glob(".metrics.json.*"))
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o666 & ~atomic._umask()
