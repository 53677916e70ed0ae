"""Time one `.tflite` file with LiteRT on this machine.

Used in-process by `HostDevice` and also run as a script (`python _host_worker.py JSON`) so a
model can be timed in a fresh process. It imports only numpy and ai_edge_litert, never the
project, so the child process starts fast and needs no install of this package.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from typing import Any

DELEGATES = ("xnnpack", "cpu")


def time_model(path: str, threads: int, delegate: str, runs: int, warmup: int) -> dict[str, Any]:
    """Load `path` in a fresh interpreter, warm up, then time `runs` invocations.

    Returns:
        {"samples_ms", "init_ms", "first_ms", "memory_mb"}; `first_ms` is the first run
        (cold caches; a warm-up run unless warmup=0, when it is also the first sample),
        `memory_mb` the growth of the peak resident set from before loading to after the last
        run, the figure benchmark_model reports as "overall" on a phone (profiling/
        memory_info.cc reads ru_maxrss). The peak is reset to the current size first
        (`_reset_peak_rss`) where Linux allows it, else an earlier higher peak hides the growth.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if delegate not in DELEGATES:
        raise ValueError(f"host delegate {delegate!r}: use one of {DELEGATES}")
    # "xnnpack" is LiteRT's default CPU path; "cpu" turns default delegates off (plain kernels).
    resolver = (
        OpResolverType.BUILTIN
        if delegate == "xnnpack"
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    gc.collect()
    _reset_peak_rss()
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter_ns()
    interpreter = Interpreter(
        model_path=path, num_threads=threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for inp in interpreter.get_input_details():
        x = rng.random(tuple(inp["shape"]), dtype=np.float32).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
    init_ns = time.perf_counter_ns() - t0

    warmup_ms = []
    for _ in range(warmup):
        t = time.perf_counter_ns()
        interpreter.invoke()
        warmup_ms.append((time.perf_counter_ns() - t) / 1e6)
    samples = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        interpreter.invoke()
        samples.append((time.perf_counter_ns() - t) / 1e6)
    memory_mb = _peak_rss_mb() - rss0
    del interpreter
    gc.collect()
    return {
        "samples_ms": samples,
        "init_ms": init_ns / 1e6,
        "first_ms": (warmup_ms or samples)[0],
        "memory_mb": memory_mb,
    }


def _reset_peak_rss() -> None:
    """Lower the peak resident set to the current one (Linux: "5" > /proc/self/clear_refs).

    benchmark_model's baseline is the start of a small native process; here the imports of
    numpy and LiteRT may have peaked above what a small model ever reaches, hiding its growth.
    Where the kernel does not allow it, the peak since process start stays the baseline.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak resident set of this process in MiB.

    Linux: VmHWM of /proc/self/status, the address space's high-water mark that ru_maxrss
    reports too (ru_maxrss also keeps the peak of exited threads, which clear_refs cannot
    lower); elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    result = time_model(**args)
    sys.stdout.write("\n" + json.dumps(result) + "\n")  # last line: the result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
