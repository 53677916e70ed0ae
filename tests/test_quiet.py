"""No library output a user cannot act on (srsearch.common.quiet), checked in real processes: the
lines the README's main job printed from a fresh clone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from srsearch.models import build_model, preset_config
from srsearch.models.modelio import save_model

NOISE = ("Failed to load", "KernelPreference", "absl::InitializeLog", "oneDNN", "LeafSpec",
         "Tip:", "GPU available", "greenlet")


def test_optuna_greenlet_notice_is_quiet(tmp_path):
    script = ("from srsearch.common.quiet import quiet_library_logs; quiet_library_logs(); "
              "import optuna._gp.batched_lbfgsb")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_env(tmp_path), cwd=Path.cwd(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "greenlet" not in out.stderr


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path.cwd())}


def test_export_console_shows_no_library_noise(tmp_path):
    torch.manual_seed(0)
    save_model(build_model(preset_config("ecbsr-m4c8", 2)), tmp_path / "m.pt")
    out = subprocess.run(
        [sys.executable, "-m", "srsearch.cli", "export", "--tflite", str(tmp_path / "m.pt"),
         "--out", str(tmp_path / "m.tflite"), "--input-size", "32x24"],
        capture_output=True, text=True, env=_env(tmp_path), cwd=Path.cwd(), timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "m.tflite").is_file()
    console = out.stdout + out.stderr
    assert not [n for n in NOISE if n in console], console[-3000:]


def test_worker_c_stderr_and_library_loggers_go_to_the_log(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text("""
import logging, os
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from srsearch.common.quiet import library_log_path, quiet_library_logs, quiet_worker

def job():
    os.write(2, b"C++ noise from a worker\\n")
    logging.getLogger("torchao").warning("Failed to load x.so")
    logging.getLogger("torchao").error("a real torchao error")
    return 7

if __name__ == "__main__":
    quiet_library_logs()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=quiet_worker) as pool:
        assert pool.submit(job).result() == 7
    print(library_log_path())
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=_env(tmp_path), cwd=Path.cwd(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "noise" not in out.stderr and "Failed to load" not in out.stderr
    log = Path(out.stdout.strip().splitlines()[-1]).read_text()
    assert "C++ noise from a worker" in log and "a real torchao error" in log
    assert "Failed to load" not in log  # below the torchao logger's level: dropped
