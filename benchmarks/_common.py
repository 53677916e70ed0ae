"""Shared helpers of the benchmark scripts: the machine line and the held-out photo sets."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

# ../shared beside the checkout; SRSEARCH_SUN80 names it elsewhere (a copy on another machine)
SUN80 = Path(os.environ.get("SRSEARCH_SUN80")
             or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sun80")


def machine() -> str:
    """One line naming the machine a figure was taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def outside_photos(dest: Path) -> Path:
    """Natural photos in neither `builtin` nor sun80: the ones scikit-learn and matplotlib ship
    (china.jpg, flower.jpg, grace_hopper.jpg). Copied into ``dest``; needs scikit-learn."""
    import matplotlib
    import sklearn.datasets

    dest.mkdir(parents=True, exist_ok=True)
    sk = Path(sklearn.datasets.__file__).parent / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    for src in (sk / "china.jpg", sk / "flower.jpg", mpl / "grace_hopper.jpg"):
        shutil.copy(src, dest / src.name)
    return dest


def sun80_last10(dest: Path) -> Path | None:
    """sun80's documented validation split (last 10 by name) as a folder, or None if absent."""
    if not SUN80.is_dir():
        return None
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in SUN80.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for p in files[-10:]:
        shutil.copy(p, dest / p.name)
    return dest


def run_claimed(work: Callable[[Any], None], jobs: Sequence[tuple[str, Any]], out: Path,
                workers: int = 1, deadline_s: float | None = None, tag: str = "job") -> None:
    """``work(job)`` for each ``(key, job)``: ``workers`` spawned processes at a time (safe with
    CUDA), each claiming the next unclaimed key (``OUT/.claims/<key>``; the claims of an earlier,
    killed call are cleared first), none started after ``deadline_s`` seconds. ``work`` must be
    a module-level function; it skips a job that is already finished."""
    shutil.rmtree(out / ".claims", ignore_errors=True)
    deadline = time.time() + (deadline_s if deadline_s is not None else float("inf"))
    if workers > 1:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_claim_loop, args=(work, jobs, out, deadline, tag))
                 for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    else:
        _claim_loop(work, jobs, out, deadline, tag)


def _claim_loop(work: Callable[[Any], None], jobs: Sequence[tuple[str, Any]], out: Path,
                deadline: float, tag: str) -> None:
    for key, job in jobs:
        if time.time() > deadline:
            print(f"[{tag}] deadline passed: {key} not started", flush=True)
            continue
        try:
            (out / ".claims" / key).mkdir(parents=True)
        except FileExistsError:
            continue
        work(job)
