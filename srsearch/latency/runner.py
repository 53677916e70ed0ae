"""Export models once, then time them on a `Device` in rounds.

Exporting (litert-torch, 1-3 s a model, nearly all of it fixed tracing and lowering overhead)
costs more than timing the small probes, so every model is exported first, by several worker
processes when ``jobs`` > 1, and the files are kept for the whole run; the workers sit idle
while models are timed, so they never share the CPU with a measurement. Timing then goes in
rounds over all models (`build_table`, `validate`): a model's figure is the median of its
round medians, so load that comes and goes on a shared machine (or a phone warming up) moves
one round, not the result.
"""

from __future__ import annotations

import gc
import importlib.metadata
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from android_bench import BenchResult, Device
from supernet.space import ArchConfig, macs

Exporter = Callable[[nn.Module, tuple[int, int, int, int], Path, Mapping[str, Any]], Any]
"""exporter(module, nchw_input_shape, path, options): write a model file at path; options are
`srsearch.deploy.tflite.convert` keywords (channels_last_io, depth_to_space, precision)."""


def export_tflite(
    module: nn.Module,
    input_shape: tuple[int, int, int, int],
    path: Path,
    options: Mapping[str, Any],
) -> Path:
    """The exporter of the table: `srsearch.deploy.tflite.convert`, the converter that ships models,
    with ``options`` (the table's "export" settings); also times `search --measure`'s model.

    The PyTorch-vs-LiteRT check is off: probes and nets carry random weights and only their
    timing matters; the converter's correctness is tested on its own (tests/test_tflite.py).
    ``options["precision"] == "int8"`` quantises statically like `srsearch export`, calibrated
    on uniform random inputs in [0, 1]: the ranges differ from a trained model's on images, but
    the graph (int8 ops, where the (de)quantisations sit) and so the time do not.
    """
    import torch

    from srsearch.deploy import tflite

    kw = dict(options)
    if kw.get("precision") == "int8" and not kw.get("representative"):
        g = torch.Generator().manual_seed(0)
        kw["representative"] = [torch.rand(input_shape, generator=g) for _ in range(2)]
    return tflite.convert(module, input_shape, path, **kw, check=False)


@dataclass(frozen=True)
class Job:
    """One model file to export (unless it exists) and time.

    Attributes:
        id: What its results are filed under.
        path: The model file.
        module, input_shape, options: What `Exporter` gets.
    """

    id: str
    path: Path
    module: nn.Module
    input_shape: tuple[int, int, int, int]
    options: Mapping[str, Any] = field(default_factory=lambda: {"channels_last_io": True})


@dataclass
class Runner:
    """Exports `Job`s (in ``pool`` when given) and times them on ``device``."""

    device: Device
    workdir: Path
    exporter: Exporter = export_tflite
    pool: Executor | None = None

    def export(self, jobs: Sequence[Job], on_exported: Callable[[Job], None] | None = None) -> None:
        """Write every job's file that does not exist yet; ``on_exported`` is called for every
        job, those whose file was there already (a probe cache) first, so a progress bar of
        ``len(jobs)`` ends full."""
        todo = [j for j in jobs if not j.path.is_file()]
        done = on_exported or (lambda job: None)
        for j in jobs:
            if j.path.is_file():
                done(j)
        if self.pool is None or len(todo) < 2:
            for j in todo:
                self.exporter(j.module, j.input_shape, j.path, j.options)
                done(j)
            return
        futures = {
            self.pool.submit(self.exporter, j.module, j.input_shape, j.path, dict(j.options)): j
            for j in todo
        }
        for future in as_completed(futures):
            future.result()
            done(futures[future])

    def time(
        self,
        jobs: Sequence[Job],
        runs: int,
        warmup: int,
        on_result: Callable[[Job, BenchResult], None],
    ) -> None:
        """Time ``jobs`` in one `Device.benchmark` call; ``on_result`` as each one finishes."""
        if not jobs:
            return
        by_path = {str(j.path): j for j in jobs}
        with _frozen_gc():
            self.device.benchmark(
                [j.path for j in jobs],
                runs=runs,
                warmup=warmup,
                on_result=lambda r: on_result(by_path[str(r.model)], r),
            )


@contextmanager
def _frozen_gc() -> Iterator[None]:
    """Exclude the objects alive now from garbage collection while timing.

    `HostDevice` (in-process) runs `gc.collect()` around every model; in a process holding
    torch and litert-torch that walks millions of objects, ~0.15 s a call, ~5 minutes over a
    build. Frozen, the collections take microseconds. Objects frozen by someone else stay so.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def probe_cache_dir(root: Path) -> Path:
    """Where probe files live under a cache root: one folder per probe and converter version.

    A probe file depends only on the op and the converter, not on the device, so a build for
    a second device (or a resumed one) reuses them.
    """
    import torch

    from srsearch.latency.probes import PROBES_VERSION

    conv = importlib.metadata.version("litert-torch")
    name = f"v{PROBES_VERSION}-litert-torch{conv}-torch{torch.__version__}"
    return Path(root) / "latency-probes" / name


def default_jobs() -> int:
    """Export processes when none are asked for: one per CPU, at most 4."""
    return min(4, os.cpu_count() or 1)


@contextmanager
def runner(device: Device, exporter: Exporter | None, jobs: int = 1) -> Iterator[Runner]:
    """A `Runner` with a fresh scratch folder, removed afterwards, and ``jobs`` exporters."""
    workdir = Path(tempfile.mkdtemp(prefix="srsearch-latency-"))
    pool = None
    if jobs > 1:
        from srsearch.common.quiet import quiet_worker

        # spawn: a fork of a process that has run torch/LiteRT threads can deadlock. A spawned
        # worker starts without the parent's warning filters: it sets them itself.
        pool = ProcessPoolExecutor(
            jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=quiet_worker,
        )
    try:
        yield Runner(device, workdir, exporter or export_tflite, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)


def interleave(a: Sequence[Any], b: Sequence[Any], min_chunk: int) -> list[tuple[str, list]]:
    """Spread ``b``'s items evenly between slices of ``a`` (of ``min_chunk`` or more items).

    Returns:
        [("a", slice), ("b", items), ("a", slice), ...], empty parts left out. Used to time
        the fit nets between the probes, so both see the same share of the machine's load.
    """
    n = max(1, min(len(b) + 1, -(-len(a) // max(1, min_chunk))))
    out: list[tuple[str, list]] = []
    for i in range(n):
        part_a = list(a[i * len(a) // n : (i + 1) * len(a) // n])
        part_b = list(b[i * len(b) // n : (i + 1) * len(b) // n])
        out += [(k, v) for k, v in (("a", part_a), ("b", part_b)) if v]
    return out


NET_FIELDS = (
    "arch",
    "median_ms",
    "round_ms",
    "min_ms",
    "runs",
    "depth",
    "macs",
    "measured_at",
    "load1",
)


def add_net_round(
    record: dict[str, Any] | None, arch: ArchConfig, result: BenchResult, lr_hw: tuple[int, int]
) -> dict[str, Any]:
    """A whole-net record with one more round: ``median_ms`` is the median of ``round_ms``."""
    rec = record or {"arch": arch.to_dict(), "round_ms": [], "min_ms": float("inf"), "runs": 0}
    rec["round_ms"] = [*rec["round_ms"], result.median_ms]
    rec.update(
        median_ms=statistics.median(rec["round_ms"]),
        min_ms=min(rec["min_ms"], result.min_ms),
        runs=rec["runs"] + result.runs,
        depth=arch.depth,
        macs=macs(arch, lr_hw),
        measured_at=time.time(),
        load1=load1(),
    )
    return rec


def load1() -> float | None:
    """1-minute load average (how busy the machine was), None where there is none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
