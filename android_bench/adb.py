"""A phone over adb as a benchmark target: LiteRT's `benchmark_model` binary run on the device.

Talks to the real `adb` command line (argument lists, never a host shell). Everything this
module sends to the device shell is quoted with `shlex.quote`, because `adb shell` joins its
arguments and hands them to the device's `sh`.

Only ever run against the fake adb in `tests/fake_adb/` so far, not against a real phone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from android_bench.device import BenchResult, Device, DeviceError, ResultCallback, check_paths

log = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/srsearch"
DELEGATE_FLAGS = {
    "xnnpack": "--use_xnnpack=true",
    "gpu": "--use_gpu=true",
    "nnapi": "--use_nnapi=true",
    # An explicit false turns off the XNNPACK delegate LiteRT applies by default.
    "cpu": "--use_xnnpack=false",
}
GET_BINARY = (
    "download the nightly android_aarch64 build from https://storage.googleapis.com/"
    "tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model or build it with bazel (docs/android.md)"
)
# What adb prints when the device goes away in the middle of a command.
_DROPPED = re.compile(
    r"error: (device offline|closed|protocol fault)|no devices/emulators found"
    r"|error: device '[^']*' not found"
)
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


class AdbDevice(Device):
    """Benchmark `.tflite` files on an Android phone with `benchmark_model`.

    For each `benchmark()` call the binary is pushed to `remote_dir` once; each model is
    pushed, run as `[taskset MASK] benchmark_model --graph=... --num_threads=N <delegate>
    --num_runs=R --warmup_runs=W --min_secs=0 --warmup_min_secs=0` (so exactly R timed runs)
    and removed; the binary and folder are removed at the end, also after an error.

    `benchmark_model` prints aggregates only, never per-run times: results carry its count,
    min, max, mean and std; its median where the build prints one (p5/median/p95, recent
    LiteRT) and otherwise its mean with `median_is_avg=True`; `p10_ms`/`p90_ms` stay None and
    `samples_ms` empty. Its p5/p95, when printed, are kept in `BenchResult.extra`.

    Args:
        serial: adb serial; None picks the only attached device.
        benchmark_binary: Local path of an Android `benchmark_model` build for the phone's ABI.
        threads: `--num_threads`.
        delegate: "xnnpack", "gpu", "nnapi" or "cpu" (plain LiteRT kernels).
        cpu_mask: Hex CPU affinity mask for `taskset` (e.g. "f0" = four big cores on many
            phones), or None.
        adb: The adb executable.
        timeout_s: Limit for each adb call (a whole benchmark_model run is one call).
        remote_dir: Scratch folder on the device.
    """

    def __init__(
        self,
        serial: str | None = None,
        benchmark_binary: Path | None = None,
        threads: int = 4,
        delegate: str = "xnnpack",
        cpu_mask: str | None = None,
        adb: str = "adb",
        timeout_s: float = 300.0,
        remote_dir: str = REMOTE_DIR,
    ) -> None:
        if delegate not in DELEGATE_FLAGS:
            raise DeviceError(
                f"delegate {delegate!r} is unknown; use one of {', '.join(DELEGATE_FLAGS)}"
            )
        if threads < 1:
            raise DeviceError(f"threads={threads}: need at least 1")
        if cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", cpu_mask):
            raise DeviceError(f"cpu mask {cpu_mask!r} must be hex, e.g. f0 for CPUs 4-7")
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
        self._resolved: str | None = None
        self._fingerprint: dict[str, Any] | None = None

    # --- identity ---------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            props = self.getprops()
            soc = props.get("ro.soc.model") or props.get("ro.board.platform") or "unknown"
            binary = self.benchmark_binary
            self._fingerprint = {
                "kind": "adb",
                "name": props.get("ro.product.model", "unknown"),
                "manufacturer": props.get("ro.product.manufacturer", ""),
                "soc": soc,
                "android": props.get("ro.build.version.release", ""),
                "abi": props.get("ro.product.cpu.abi", ""),
                "threads": self.threads,
                "delegate": self.delegate,
                "cpu_mask": self.cpu_mask,
                "runtime": "benchmark_model",
                "runtime_sha256": _sha256(binary)[:16] if binary else None,
            }
        return dict(self._fingerprint)

    def getprops(self) -> dict[str, str]:
        """All system properties (`adb shell getprop`), as {name: value}."""
        proc = self._shell(["getprop"], what="reading device properties")
        if proc.returncode != 0:
            raise DeviceError(f"`getprop` failed on {self._serial()}: {_tail(proc)}")
        return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", proc.stdout, flags=re.M))

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
        remote_bin = str(self.remote_dir / "benchmark_model")
        self._check(self._shell(["mkdir", "-p", str(self.remote_dir)], "creating the scratch dir"))
        pushed = [remote_bin]
        results = []
        try:
            self._push(self.benchmark_binary, remote_bin, "pushing benchmark_model")
            self._check(self._shell(["chmod", "755", remote_bin], "chmod benchmark_model"))
            for i, path in enumerate(paths):
                remote = str(self.remote_dir / f"{i:04d}_{_safe_name(path.name)}")
                pushed.append(remote)
                try:
                    self._push(path, remote, f"pushing model {path}")
                    text = self._run_benchmark(remote_bin, remote, path, runs, warmup, serial)
                finally:
                    self._remove([remote], f"removing model {path}")
                    pushed.remove(remote)
                result = result_from_output(path, text)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            self._remove(pushed, "removing benchmark_model", rmdir=True)
        return results

    def _run_benchmark(
        self, remote_bin: str, remote_model: str, path: Path, runs: int, warmup: int, serial: str
    ) -> str:
        cmd = ["taskset", self.cpu_mask] if self.cpu_mask else []
        cmd += [
            remote_bin,
            f"--graph={remote_model}",
            f"--num_threads={self.threads}",
            DELEGATE_FLAGS[self.delegate],
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            "--min_secs=0",
            "--warmup_min_secs=0",
        ]
        proc = self._shell(cmd, f"benchmarking model {path}")
        text = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0 or "timings in us:" not in text:
            how = f"exit status {proc.returncode}"
            if proc.returncode in (139, -11):
                how += " (segmentation fault)"
            elif proc.returncode == 0:
                how = "no timings line in its output"
            raise DeviceError(
                f"benchmark_model failed on model {path} on device {serial} ({how}). "
                f"The model may use an op or size the {self.delegate} delegate cannot run; "
                f"try another --delegate/--gpu setting. Last output:\n{_tail(proc, 20)}"
            )
        return text

    # --- adb plumbing -----------------------------------------------------------------------

    def _serial(self) -> str:
        """The device to talk to, checked against `adb devices`."""
        if self._resolved is not None:
            return self._resolved
        proc = self._adb(["devices"], "listing devices")
        if proc.returncode != 0:
            raise DeviceError(f"`{self.adb} devices` failed: {_tail(proc)}")
        devices = parse_devices(proc.stdout)
        if self.serial is not None:
            state = devices.get(self.serial)
            if state is None:
                attached = ", ".join(devices) or "none"
                raise DeviceError(
                    f"device {self.serial} is not attached (attached: {attached}); check "
                    "`adb devices` and the serial in --target adb:SERIAL"
                )
            chosen = self.serial
        elif not devices:
            raise DeviceError(
                "no Android device found by `adb devices`; connect a phone with USB debugging "
                "enabled (docs/android.md)"
            )
        elif len(devices) > 1:
            listing = ", ".join(f"{s} ({st})" for s, st in devices.items())
            raise DeviceError(
                f"several devices attached: {listing}; choose one with --target adb:SERIAL"
            )
        else:
            chosen, state = next(iter(devices.items()))
        if state == "unauthorized":
            raise DeviceError(
                f"device {chosen} is unauthorized: unlock the phone and accept the "
                "'Allow USB debugging' prompt, then rerun"
            )
        if state != "device":
            raise DeviceError(
                f"device {chosen} is {state}: reconnect the cable or run `adb kill-server`, "
                "then check `adb devices`"
            )
        self._resolved = chosen
        return chosen

    def _shell(self, tokens: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
        command = " ".join(shlex.quote(str(t)) for t in tokens)
        return self._device_call(["shell", command], what)

    def _push(self, local: Path, remote: str, what: str) -> None:
        self._check(self._device_call(["push", str(local), remote], what))

    def _remove(self, remote_paths: Sequence[str], what: str, rmdir: bool = False) -> None:
        """Best-effort cleanup: never hides the error that got us here.

        `rmdir` also removes the scratch folder, which fails harmlessly if it is not empty
        (something this run did not put there).
        """
        try:
            if remote_paths:
                self._shell(["rm", "-f", *remote_paths], what)
            if rmdir:
                self._shell(["rmdir", str(self.remote_dir)], "removing the scratch folder")
        except DeviceError as exc:
            log.warning("could not clean up on the device while %s: %s", what, exc)

    def _device_call(self, args: list[str], what: str) -> subprocess.CompletedProcess[str]:
        """Run `adb -s SERIAL ARGS...`, retrying once if the connection drops."""
        serial = self._serial()
        for attempt in (1, 2):
            proc = self._adb(["-s", serial, *args], what)
            if not _DROPPED.search(proc.stderr + proc.stdout):
                return proc
            if attempt == 1:
                log.warning("adb connection to %s dropped while %s; retrying once", serial, what)
                self._adb(["-s", serial, "wait-for-device"], f"waiting for {serial}")
        raise DeviceError(
            f"adb connection to {serial} dropped twice while {what}: {_tail(proc)}; check the "
            "cable and `adb devices`, then rerun"
        )

    def _adb(self, args: list[str], what: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.adb, *args]
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", timeout=self.timeout_s
            )
        except FileNotFoundError as exc:
            raise DeviceError(
                f"adb not found ({self.adb!r}); install Android SDK platform-tools and put adb "
                "on PATH (docs/android.md)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"adb timed out after {self.timeout_s:g} s while {what}; raise the timeout or "
                "lower --runs"
            ) from exc

    def _check(self, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0:
            raise DeviceError(f"`{shlex.join(proc.args)}` failed: {_tail(proc)}")


def parse_devices(text: str) -> dict[str, str]:
    """`adb devices` output -> {serial: state} (state: device, unauthorized, offline, ...)."""
    devices = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            devices[parts[0]] = parts[1]
    return devices


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
                stats.update(min=value, max=value, avg=value, median=value, std=0.0)
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


def _safe_name(name: str) -> str:
    """Device-side file name: the local name with shell-awkward characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tail(proc: subprocess.CompletedProcess[str], n: int = 8) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return "\n".join(text.strip().splitlines()[-n:]) or "(no output)"
