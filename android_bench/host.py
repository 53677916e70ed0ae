"""This machine as a benchmark target: LiteRT's Python interpreter, XNNPACK on the CPU."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from android_bench import _host_worker
from android_bench.device import BenchResult, Device, DeviceError, ResultCallback, check_paths

_WORKER = Path(_host_worker.__file__)


class HostDevice(Device):
    """Time models with `ai_edge_litert.interpreter.Interpreter` on this machine.

    Each model gets a fresh interpreter, warm-up runs, then `runs` timed `invoke()` calls
    (`time.perf_counter_ns`), so the statistics come from raw samples.

    With `isolate=True` (the default) each model runs in its own Python process. Measured on a
    2-core Xeon (LiteRT 2.3, XNNPACK): steady-state latency is the same in-process and in a
    fresh process (medians within run-to-run noise), but in-process `init_ms` misses the
    one-time runtime start-up (~20 ms, paid by whichever model comes first) and `memory_mb`
    reads ~0 because the allocator reuses the previous model's freed pages. A fresh process
    also turns a crash in the runtime into an error that names the model. It costs ~0.3 s per
    model; pass `isolate=False` when only latency matters and speed does.

    Args:
        threads: Interpreter threads (`num_threads`).
        delegate: "xnnpack" (LiteRT's default CPU path) or "cpu" (default delegates off).
        isolate: One process per model (see above).
        timeout_s: Per-model limit when isolated.
    """

    def __init__(
        self,
        threads: int = 2,
        delegate: str = "xnnpack",
        *,
        isolate: bool = True,
        timeout_s: float = 600.0,
    ) -> None:
        if delegate not in _host_worker.DELEGATES:
            raise DeviceError(
                f"host delegate {delegate!r} is not available: the host runs LiteRT on the "
                f"CPU, use one of {', '.join(_host_worker.DELEGATES)} (GPU/NNAPI need "
                "--target adb)"
            )
        if threads < 1:
            raise DeviceError(f"threads={threads}: need at least 1")
        self.threads = threads
        self.delegate = delegate
        self.isolate = isolate
        self.timeout_s = timeout_s

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "host",
            "name": _cpu_model(),
            "machine": platform.machine(),
            "logical_cpus": os.cpu_count(),
            "threads": self.threads,
            "runtime": "ai-edge-litert",
            "runtime_version": importlib.metadata.version("ai-edge-litert"),
            "delegate": self.delegate,
        }

    def benchmark(
        self,
        tflite_paths: Sequence[Path],
        runs: int = 20,
        warmup: int = 3,
        *,
        on_result: ResultCallback | None = None,
    ) -> list[BenchResult]:
        paths = check_paths(tflite_paths, runs, warmup)
        results = []
        for path in paths:
            args = dict(
                path=str(path),
                threads=self.threads,
                delegate=self.delegate,
                runs=runs,
                warmup=warmup,
            )
            raw = self._run_isolated(args) if self.isolate else _host_worker.time_model(**args)
            samples = raw.pop("samples_ms")
            result = BenchResult.from_samples(path, samples, **raw)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    def _run_isolated(self, args: dict[str, Any]) -> dict[str, Any]:
        cmd = [sys.executable, str(_WORKER), json.dumps(args)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"benchmarking {args['path']} on the host took over {self.timeout_s:g} s; "
                "lower --runs or raise the timeout"
            ) from exc
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise DeviceError(
                f"LiteRT failed on {args['path']} (exit {proc.returncode}); check that it is "
                f"a valid .tflite file. Last output:\n{tail}"
            )
        return json.loads(lines[-1])


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"
