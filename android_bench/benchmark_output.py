"""What `benchmark_model` printed: its timings, its memory, what the delegate took, and for a
failed run the error to raise (by exit status and log).

What it recognises comes from LiteRT's tools/benchmark sources (benchmark_tflite_model.cc, the
GPU delegate's refused-op list); tests/fake_adb reproduces each message with its source named.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

from android_bench.adb_transport import _tail
from android_bench.delegates import DELEGATE_NAMES
from android_bench.device import BenchResult, DeviceError

log = logging.getLogger("android_bench.adb")  # one logger for the whole adb target
GPU_BACKENDS = {"cl": "OpenCL", "gl": "OpenGL"}
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


class DelegationError(DeviceError):
    """The GPU/NNAPI delegate did not take the whole graph (with full delegation required)."""


class BenchmarkDiagnosis:
    """One run's `BenchResult` (delegation and thermal state added) and the error for a failed
    run, for a device class that sets ``delegate``,
    ``gpu_backend``, ``max_secs``, ``remote_dir`` and ``_resolved`` (`AdbDevice`)."""

    def _result(
        self, path: Path, text: str, runs: int, before: dict[str, Any], after: dict[str, Any]
    ) -> BenchResult:
        result = result_from_output(path, text)
        if result.runs != runs:
            raise DeviceError(
                f"benchmark_model ran {result.runs} of the {runs} timed runs of {path}: it stops "
                f"at --max_secs={self.max_secs:g} per phase; raise max_secs (--max-secs) or lower "
                "--runs so every figure covers the same run count"
            )
        extra = dict(result.extra)
        if self.delegate in DELEGATE_NAMES:
            extra["delegation"] = self._delegation(text, path)
        throttled = any((r.get("status") or 0) >= 1 for r in (before, after))
        extra["thermal"] = {"before": before, "after": after}
        if "cooldown_polls" in before:
            extra["thermal"]["cooldown_polls"] = before.pop("cooldown_polls")
        extra["throttled"] = throttled
        if throttled:
            log.warning(
                "%s was timed while %s was thermally throttled (status %s -> %s); its figures "
                "are flagged 'throttled'",
                path.name,
                self._resolved,
                before.get("status_name"),
                after.get("status_name"),
            )
        return dataclasses.replace(result, extra=extra)

    def _failure(
        self, proc: subprocess.CompletedProcess[str], text: str, path: Path, serial: str
    ) -> DeviceError:
        """The error for a failed benchmark_model run, by exit status and log."""
        code = proc.returncode
        head = f"benchmark_model failed on model {path} on device {serial} (exit status {code}"
        tail = f"Last output:\n{_tail(proc, 20)}"
        if "Disallowed CPU fallback detected." in text:
            return DelegationError(self._refusal(text, path) + f"\n{tail}")
        if "Failed to apply GPU delegate." in text:
            why = (
                f"could not start the GPU delegate with --gpu_backend={self.gpu_backend} "
                f"({GPU_BACKENDS[self.gpu_backend]})"
            )
            fix = "try --gpu-backend gl" if self.gpu_backend == "cl" else "try --gpu-backend cl"
            return DeviceError(f"{head}): {why}; {fix}. {tail}")
        if "Failed to mmap model" in text:
            return DeviceError(f"{head}): it could not read the pushed model; check free space "
                               f"in {self.remote_dir} (`adb shell df /data`). {tail}")  # fmt: skip
        hints = {
            126: "the binary cannot be executed: it is not built for this phone's ABI "
            "(`adb shell getprop ro.product.cpu.abi`) or lacks the exec bit",
            127: "the binary was not found on the phone",
            134: "it aborted (SIGABRT): a FATAL check failed; the log above says which",
            137: "it was killed (SIGKILL), on a phone most often by the low-memory killer: the "
            "model needs more memory than was free; close apps or time a smaller input",
            139: "segmentation fault (SIGSEGV) in the runtime or delegate; the model may use an "
            "op or size the delegate cannot run; try another --delegate",
        }
        if code in hints:
            return DeviceError(f"{head}): {hints[code]}. {tail}")
        if code == 0:
            return DeviceError(f"{head}): no timings line in its output. {tail}")
        return DeviceError(f"{head}). {tail}")

    def _refusal(self, text: str, path: Path) -> str:
        """What the delegate refused, for a run with --require_full_delegation=true."""
        name = DELEGATE_NAMES[self.delegate]
        d = parse_delegation(text)
        ops = ", ".join(d["refused_ops"]) or "(the delegate does not log which)"
        if d["total_nodes"] is not None:
            nodes = f"{d['delegated_nodes'] or 0} of {d['total_nodes']} node(s) would run on it"
        else:
            nodes = "it logged no node counts"
        return (
            f"the {name} delegate refused part of {path.name}: ops {ops}; {nodes}, the rest on "
            "the CPU. Export without those ops (srsearch export screens the GPU delegate's), or "
            "pass --allow-partial-delegation to time the mixed graph (its node counts are "
            "recorded)"
        )

    def _delegation(self, text: str, path: Path) -> dict[str, Any]:
        d = parse_delegation(text)
        name = DELEGATE_NAMES[self.delegate]
        if not d["applied"]:
            raise DeviceError(
                f"benchmark_model did not say it applied the {name} delegate to {path} (no "
                "'Explicitly applied' line); check that this build supports it (docs/android.md)"
            )
        out = {
            "delegate": self.delegate,
            "delegated_nodes": d["delegated_nodes"] or 0,
            "total_nodes": d["total_nodes"],
            "partitions": d["partitions"] or 0,
            "full": d["full"],
            "refused_ops": d["refused_ops"],
        }
        if not d["full"]:
            log.warning(
                "%s: the %s delegate runs %s of %s nodes; the rest run on the CPU",
                path.name, name, out["delegated_nodes"], out["total_nodes"],
            )  # fmt: skip
        return out


def parse_delegation(text: str) -> dict[str, Any]:
    """What benchmark_model and the delegate logged about applying a delegate.

    Lines read (sources in tests/fake_adb/adb): "Replacing N out of M node(s) with delegate
    (K) node, yielding P partitions", "Explicitly applied X delegate, and the model graph will
    be completely | partially executed by the delegate w/ P delegate kernels.", "Though X
    delegate is explicitly applied, the model graph will not be executed by the delegate.", and
    the GPU delegate's "Following operations are not supported by GPU delegate:" list, ended by
    "N operations will run on the GPU, and the remaining M ..." or "No operations will run on
    the GPU, and all M operations will run on the CPU.".
    """
    out: dict[str, Any] = {
        "applied": False, "full": False, "delegated_nodes": None, "total_nodes": None,
        "partitions": None, "refused_ops": [], "cpu_nodes": None,
    }  # fmt: skip
    if m := re.search(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(\S+\) node, "
                      r"yielding (\d+) partitions", text):  # fmt: skip
        out.update(delegated_nodes=int(m[1]), total_nodes=int(m[2]), partitions=int(m[3]))
    if re.search(r"model graph will be completely executed by the delegate", text):
        out.update(applied=True, full=True)
    elif m := re.search(r"partially executed by the delegate w/ (\d+) delegate kernels", text):
        out.update(applied=True, partitions=int(m[1]))
    elif re.search(r"delegate is explicitly applied, the model graph will not be executed", text):
        out.update(applied=True, delegated_nodes=0, partitions=0)
    if m := re.search(r"Following operations are not supported by GPU delegate:\n(.*?)\n"
                      r"(?:\d+ operations will run on the GPU|No operations will run)",
                      text, flags=re.S):  # fmt: skip
        out["refused_ops"] = sorted({ln.split(":")[0].strip() for ln in m[1].splitlines()})
    if m := re.search(r"No operations will run on the GPU, and all (\d+) operations", text):
        out["cpu_nodes"] = int(m[1])
        out["total_nodes"] = out["total_nodes"] if out["total_nodes"] is not None else int(m[1])
        out["delegated_nodes"] = out["delegated_nodes"] or 0
    return out


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Pull the numbers out of `benchmark_model`'s log (all times in microseconds).

    Understands the current format,

        Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4,
            Inference (avg): 63743.2
        count=50 first=... curr=... min=... max=... avg=... std=... [p5=... median=... p95=...]
        Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961

    and older builds ("Average inference timings in us: Warmup: ..., Init: ..., Inference:
    ...", "Peak memory footprint (MB): ..."). `stats` is the last statistics line before the
    timings line: the timed runs (the warm-up line comes before it).

    Raises:
        ValueError: no timings line.
    """
    lines = text.splitlines()
    timing_rows = [i for i, line in enumerate(lines) if "timings in us:" in line]
    if not timing_rows:
        raise ValueError("no 'Inference timings in us' line")
    row = timing_rows[-1]
    pairs = re.findall(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})", lines[row].split("us:", 1)[1])
    timings = {key.strip(): float(value) for key, value in pairs}

    stats: dict[str, float] = {}
    for line in reversed(lines[:row]):
        if re.search(r"count=\d+ (first|curr)=", line):
            stats = {k: float(v) for k, v in re.findall(rf"(\w+)=({_NUM})", line)}
            if "(all same)" in line or "min" not in stats:  # every run took the same time
                value = stats["curr"]
                stats.update(min=value, max=value, avg=value, std=0.0)
                stats.setdefault("median", value)
            break

    memory = re.search(
        rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) "
        rf"\(MB\): init=({_NUM}) overall=({_NUM})",
        text,
    )
    return {
        "init_us": timings.get("Init"),
        "first_us": timings.get("First inference"),
        "warmup_avg_us": timings.get("Warmup (avg)", timings.get("Warmup")),
        "inference_avg_us": timings.get("Inference (avg)", timings.get("Inference")),
        "stats": stats,
        "memory_init_mb": float(memory.group(1)) if memory else None,
        "memory_overall_mb": float(memory.group(2)) if memory else None,
    }


def result_from_output(model: Path, text: str) -> BenchResult:
    """A `BenchResult` from one `benchmark_model` log (see `AdbDevice` on what it can fill)."""
    parsed = parse_benchmark_output(text)
    stats = parsed["stats"]
    mean_us = stats.get("avg", parsed["inference_avg_us"])
    if mean_us is None:
        raise ValueError("benchmark_model printed no inference average")
    median_us = stats.get("median")
    ms = _us_to_ms
    extra = {
        k: ms(v)
        for k, v in (
            ("p5_ms", stats.get("p5")),
            ("p95_ms", stats.get("p95")),
            ("warmup_avg_ms", parsed["warmup_avg_us"]),
        )
        if v is not None
    }
    return BenchResult(
        model=Path(model),
        median_ms=ms(median_us if median_us is not None else mean_us),
        mean_ms=ms(mean_us),
        p10_ms=None,
        p90_ms=None,
        min_ms=ms(stats.get("min", mean_us)),
        max_ms=ms(stats.get("max")),
        std_ms=ms(stats.get("std")),
        runs=int(stats.get("count", 0)),
        init_ms=ms(parsed["init_us"]),
        first_ms=ms(parsed["first_us"]),
        memory_mb=parsed["memory_overall_mb"],
        median_is_avg=median_us is None,
        extra=extra,
    )


def _us_to_ms(value: float | None) -> float | None:
    return None if value is None else value / 1000.0
