"""A phone over adb as a benchmark target: LiteRT's `benchmark_model` binary run on the device.

Talks to the real `adb` command line (argument lists, never a host shell, stdin closed).
Everything this module sends to the device shell is quoted with `shlex.quote`, because
`adb shell` joins its arguments and hands them to the device's `sh`.

What it recognises comes from the real tools' sources, and tests/fake_adb reproduces each
message with its source named:

- a lost connection: `adb: device offline`, `adb: device 'SERIAL' not found`, `adb: error:
  failed to get feature set: ...` (push), or exit status 255 with no text (USB unplugged
  mid-command: commandline.cpp read_and_dump_protocol). Waited for (`adb wait-for-device`)
  and retried once, then reported as a connection problem with the finished results kept.
- benchmark_model's own log (INFO/WARN on stdout, ERROR on stderr): the delegate lines of
  benchmark_tflite_model.cc, the GPU delegate's refused-op list, `Unconsumed cmdline flags`.

Only ever run against the fake adb in `tests/fake_adb/` so far, not against a real phone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from android_bench.adb_transport import (
    AdbConnectionError,
    AdbTransport,
    _tail,
    _Timeout,
    parse_devices,
)
from android_bench.benchmark_output import (
    GPU_BACKENDS,
    BenchmarkDiagnosis,
    DelegationError,
    parse_benchmark_output,
    parse_delegation,
    result_from_output,
)
from android_bench.delegates import DELEGATE_NAMES
from android_bench.device import BenchResult, Device, DeviceError, ResultCallback, check_paths
from android_bench.thermal import THERMAL_STATUS, ThermalReadings

# Re-exported: callers and tests import these from here.
__all__ = [
    "DELEGATES", "GET_BINARY", "GPU_BACKENDS", "GPU_PRECISIONS", "REMOTE_DIR", "THERMAL_STATUS",
    "AdbConnectionError", "AdbDevice", "DelegationError", "parse_benchmark_output",
    "parse_delegation", "parse_devices", "result_from_output",
]

log = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/srsearch"
DELEGATES = ("xnnpack", "cpu", "gpu", "nnapi")
GPU_PRECISIONS = ("fp16", "fp32")
GET_BINARY = (
    "download the nightly android_aarch64 build from https://storage.googleapis.com/"
    "tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model or build it with bazel (docs/android.md)"
)
class AdbDevice(AdbTransport, BenchmarkDiagnosis, ThermalReadings, Device):
    """Benchmark `.tflite` files on an Android phone with `benchmark_model`.

    For each `benchmark()` call the binary is pushed to `remote_dir` once; each model is
    pushed, run as `echo srsearch-pid:$$; exec [taskset MASK] benchmark_model --graph=...
    --num_threads=N <delegate flags> --num_runs=R --warmup_runs=W --min_secs=0
    --warmup_min_secs=0 --max_secs=S` (exactly R timed runs, checked afterwards) and removed;
    the binary and folder are removed at the end, also after an error (not after a lost
    connection). Before and after each model the thermal state is read (`read_thermal`).

    `benchmark_model` prints aggregates only, never per-run times: results carry its count,
    min, max, mean and std; its median where the build prints one (p5/median/p95, recent
    LiteRT) and otherwise its mean with `median_is_avg=True`; `p10_ms`/`p90_ms` stay None and
    `samples_ms` empty. Its p5/p95, the delegation and the thermal readings go in `extra`.

    Args:
        serial: adb serial; None picks the only attached device.
        benchmark_binary: Local path of an Android `benchmark_model` build for the phone's ABI.
        threads: `--num_threads`.
        delegate: "xnnpack" (LiteRT's default CPU path), "cpu" (plain kernels), "gpu" or
            "nnapi".
        cpu_mask: Hex CPU affinity mask for `taskset` (e.g. "f0" = CPUs 4-7, often the big
            cores; a leading 0x is dropped, toybox taskset rejects it); checked against the
            phone's CPUs.
        adb: The adb executable.
        timeout_s: Limit for each adb call (a whole benchmark_model run is one call); on
            expiry the benchmark_model process this harness started is killed on the phone.
        remote_dir: Scratch folder on the device.
        max_secs: benchmark_model's `--max_secs` (its own default, 150 s, silently cuts slow
            runs short); a run that stops before `runs` timed runs is an error. Default:
            0.4 * timeout_s, at most 240 s (warm-up and timed runs may each take max_secs).
        allow_partial_delegation: GPU/NNAPI: time a graph the delegate takes only part of
            (recording the delegated node count) instead of failing on it.
        gpu_precision: "fp16" (`--gpu_precision_loss_allowed=true`, the tool's default) or
            "fp32".
        gpu_backend: "cl" (OpenCL) or "gl" (OpenGL); passed as `--gpu_backend`, which makes
            the delegate fail rather than fall back to the other one.
        cooldown_s: Before each model, wait up to this long for the thermal status to be back
            to none (0: do not wait, only record).
        reconnect_timeout_s: How long to wait for a dropped device to come back (once).
    """

    COOLDOWN_POLL_S = 5.0

    def __init__(
        self,
        serial: str | None = None,
        benchmark_binary: Path | None = None,
        threads: int = 4,
        delegate: str = "xnnpack",
        cpu_mask: str | None = None,
        adb: str = "adb",
        timeout_s: float = 600.0,
        remote_dir: str = REMOTE_DIR,
        max_secs: float | None = None,
        allow_partial_delegation: bool = False,
        gpu_precision: str = "fp16",
        gpu_backend: str = "cl",
        cooldown_s: float = 0.0,
        reconnect_timeout_s: float = 120.0,
    ) -> None:
        if delegate not in DELEGATES:
            raise DeviceError(
                f"delegate {delegate!r} is unknown; use one of {', '.join(DELEGATES)}"
            )
        if threads < 1:
            raise DeviceError(f"threads={threads}: need at least 1")
        if cpu_mask is not None:
            cpu_mask = re.sub(r"^0[xX]", "", cpu_mask).lower()
            if not re.fullmatch(r"[0-9a-f]+", cpu_mask) or int(cpu_mask, 16) == 0:
                raise DeviceError(
                    f"--cpu-mask {cpu_mask!r} must be a non-zero hex mask, e.g. f0 for CPUs 4-7"
                )
        if gpu_precision not in GPU_PRECISIONS:
            raise DeviceError(f"--gpu-precision {gpu_precision!r}: use fp16 or fp32")
        if gpu_backend not in GPU_BACKENDS:
            raise DeviceError(f"--gpu-backend {gpu_backend!r}: use cl (OpenCL) or gl (OpenGL)")
        if max_secs is None:
            max_secs = min(240.0, 0.4 * timeout_s)
        if max_secs <= 0 or 2 * max_secs >= timeout_s:
            raise DeviceError(
                f"max_secs={max_secs:g} must be positive and under half of timeout_s="
                f"{timeout_s:g} (warm-up and timed runs may each take max_secs)"
            )
        if benchmark_binary is not None and not Path(benchmark_binary).is_file():
            raise DeviceError(f"benchmark binary {benchmark_binary} does not exist; {GET_BINARY}")
        self.serial = serial
        self.benchmark_binary = Path(benchmark_binary) if benchmark_binary else None
        self.threads = threads
        self.delegate = delegate
        self.cpu_mask = cpu_mask
        self.adb = adb
        self.timeout_s = timeout_s
        self.remote_dir = PurePosixPath(remote_dir)
        self.max_secs = max_secs
        self.allow_partial_delegation = allow_partial_delegation
        self.gpu_precision = gpu_precision
        self.gpu_backend = gpu_backend
        self.cooldown_s = cooldown_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self._resolved: str | None = None
        self._fingerprint: dict[str, Any] | None = None

    # --- identity ---------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            props = self.getprops()
            soc = props.get("ro.soc.model") or props.get("ro.board.platform") or "unknown"
            binary = self.benchmark_binary
            fp: dict[str, Any] = {
                "kind": "adb",
                "name": props.get("ro.product.model", "unknown"),
                "manufacturer": props.get("ro.product.manufacturer", ""),
                "soc": soc,
                "soc_manufacturer": props.get("ro.soc.manufacturer", ""),
                "android": props.get("ro.build.version.release", ""),
                "build_fingerprint": props.get("ro.build.fingerprint", ""),
                "abi": props.get("ro.product.cpu.abi", ""),
                "threads": self.threads,
                "delegate": self.delegate,
                "cpu_mask": self.cpu_mask,
                "runtime": "benchmark_model",
                "runtime_sha256": _sha256(binary)[:16] if binary else None,
            }
            if self.delegate in DELEGATE_NAMES:
                fp["full_delegation"] = not self.allow_partial_delegation
            if self.delegate == "gpu":
                fp["gpu_precision"] = self.gpu_precision
                fp["gpu_backend"] = GPU_BACKENDS[self.gpu_backend]
            self._fingerprint = fp
        return dict(self._fingerprint)

    def getprops(self) -> dict[str, str]:
        """All system properties (`adb shell getprop`), as {name: value}."""
        proc = self._shell(["getprop"], what="reading device properties")
        if proc.returncode != 0:
            raise DeviceError(f"`getprop` failed on {self._serial()}: {_tail(proc)}")
        return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", proc.stdout, flags=re.M))

    def cpus(self) -> list[int]:
        """The phone's CPU numbers (/sys/devices/system/cpu/present, e.g. "0-7")."""
        proc = self._shell(["cat", "/sys/devices/system/cpu/present"], "reading the CPU list")
        if proc.returncode != 0:
            raise DeviceError(f"could not read the CPU list of {self._serial()}: {_tail(proc)}")
        return _cpu_list(proc.stdout)

    # --- benchmark --------------------------------------------------------------------------

    def benchmark(
        self,
        tflite_paths: Sequence[Path],
        runs: int = 20,
        warmup: int = 3,
        *,
        on_result: ResultCallback | None = None,
    ) -> list[BenchResult]:
        paths = check_paths(tflite_paths, runs, warmup)
        if self.benchmark_binary is None:
            raise DeviceError(f"no benchmark_model binary given (--benchmark-binary); {GET_BINARY}")
        serial = self._serial()
        if self.cpu_mask:
            self._check_mask(serial)
        remote_bin = str(self.remote_dir / "benchmark_model")
        results: list[BenchResult] = []
        pushed = [remote_bin]
        connected = True
        try:
            self._check(self._shell(["mkdir", "-p", str(self.remote_dir)], "creating the dir"))
            self._push(self.benchmark_binary, remote_bin, "pushing benchmark_model")
            self._check(self._shell(["chmod", "755", remote_bin], "chmod benchmark_model"))
            for i, path in enumerate(paths):
                before = self._cooled_down()
                remote = str(self.remote_dir / f"{i:04d}_{_safe_name(path.name)}")
                pushed.append(remote)
                try:
                    self._push(path, remote, f"pushing model {path}")
                    text = self._run_benchmark(remote_bin, remote, path, runs, warmup, serial)
                finally:
                    if connected:
                        self._remove([remote], f"removing model {path}")
                    pushed.remove(remote)
                after = self.read_thermal()
                result = self._result(path, text, runs, before, after)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        except AdbConnectionError as exc:
            connected = False
            kept = f"; the {len(results)} finished result(s) are kept" if results else ""
            raise AdbConnectionError(
                f"{exc}{kept}. Files may remain in {self.remote_dir} on the phone.", results
            ) from exc
        finally:
            if connected:
                self._remove(pushed, "removing benchmark_model", rmdir=True)
        return results

    def _check_mask(self, serial: str) -> None:
        cpus = self.cpus()
        mask = int(self.cpu_mask or "0", 16)
        chosen = [c for c in range(mask.bit_length()) if mask >> c & 1]
        missing = [c for c in chosen if c not in cpus]
        if missing:
            raise DeviceError(
                f"--cpu-mask {self.cpu_mask} selects CPUs {_ranges(missing)} but {serial} has "
                f"CPUs {_ranges(cpus)}; pick a mask within them (docs/android.md, 'Pinning')"
            )
        if self.threads > len(chosen):
            log.warning(
                "%d threads on %d CPUs (mask %s: CPUs %s): threads will share cores and time "
                "each other; use --threads %d or a wider mask",
                self.threads, len(chosen), self.cpu_mask, _ranges(chosen), len(chosen),
            )  # fmt: skip

    def _delegate_flags(self) -> list[str]:
        if self.delegate == "xnnpack":
            return ["--use_xnnpack=true"]
        if self.delegate == "cpu":
            # An explicit false turns off the XNNPACK delegate LiteRT applies by default.
            return ["--use_xnnpack=false"]
        full = "false" if self.allow_partial_delegation else "true"
        if self.delegate == "nnapi":
            return ["--use_nnapi=true", f"--require_full_delegation={full}"]
        loss = "true" if self.gpu_precision == "fp16" else "false"
        return [
            "--use_gpu=true",
            f"--gpu_precision_loss_allowed={loss}",
            f"--gpu_backend={self.gpu_backend}",
            f"--require_full_delegation={full}",
        ]

    def _run_benchmark(
        self, remote_bin: str, remote_model: str, path: Path, runs: int, warmup: int, serial: str
    ) -> str:
        cmd = ["taskset", self.cpu_mask] if self.cpu_mask else []
        cmd += [
            remote_bin,
            f"--graph={remote_model}",
            f"--num_threads={self.threads}",
            *self._delegate_flags(),
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            "--min_secs=0",
            "--warmup_min_secs=0",
            f"--max_secs={self.max_secs:g}",
        ]
        # `$$` is the shell's pid, which `exec` hands on to taskset and benchmark_model: the
        # one process to stop if the host gives up on it.
        line = "echo srsearch-pid:$$; exec " + " ".join(shlex.quote(str(t)) for t in cmd)
        try:
            proc = self._device_call(["shell", line], f"benchmarking model {path}")
        except _Timeout as exc:
            self._stop_remote(exc.output, remote_bin)
            raise DeviceError(str(exc)) from exc
        text = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0 or "timings in us:" not in text:
            raise self._failure(proc, text, path, serial)
        unconsumed = re.search(r"Unconsumed cmdline flags: (.*)", text)
        if unconsumed:
            ours = [f for f in self._delegate_flags() if f in unconsumed.group(1).split()]
            if ours:
                raise DeviceError(
                    f"this benchmark_model build does not know {' '.join(ours)} (it logged "
                    f"'Unconsumed cmdline flags: {unconsumed.group(1)}') and so timed {path} "
                    f"without the {self.delegate} delegate; use a build with {self.delegate} "
                    "support (docs/android.md)"
                )
            log.warning("benchmark_model ignored flags: %s", unconsumed.group(1))
        return text

    def _stop_remote(self, output: str, remote_bin: str) -> None:
        """Kill the benchmark_model this harness started (its pid was echoed), nothing else."""
        m = re.search(r"srsearch-pid:(\d+)", output)
        if not m:
            log.warning("could not stop benchmark_model on the phone: its pid was not printed")
            return
        pid = m.group(1)
        line = f"grep -q {shlex.quote(remote_bin)} /proc/{pid}/cmdline && kill {pid}"
        try:
            self._device_call(["shell", line], f"stopping benchmark_model (pid {pid})")
        except DeviceError as exc:
            log.warning("could not stop benchmark_model (pid %s) on the phone: %s", pid, exc)

def _cpu_list(text: str) -> list[int]:
    """ "0-3,6" -> [0, 1, 2, 3, 6] (the kernel's cpulist format)."""
    out: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    return out


def _ranges(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 3, 6] -> "0-3,6"."""
    parts, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(c)
    if run:
        parts.append(run)
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in parts)


def _safe_name(name: str) -> str:
    """Device-side file name: the local name with shell-awkward characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


