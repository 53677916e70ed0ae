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

import dataclasses
import hashlib
import logging
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from android_bench.delegates import DELEGATE_NAMES
from android_bench.device import BenchResult, Device, DeviceError, ResultCallback, check_paths

log = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/srsearch"
DELEGATES = ("xnnpack", "cpu", "gpu", "nnapi")
GPU_BACKENDS = {"cl": "OpenCL", "gl": "OpenGL"}
GPU_PRECISIONS = ("fp16", "fp32")
GET_BINARY = (
    "download the nightly android_aarch64 build from https://storage.googleapis.com/"
    "tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model or build it with bazel (docs/android.md)"
)
# adb's own words for a device that is not reachable (transport.cpp acquire_one_transport,
# printed by error_exit as "adb: ..." or by the sync client as "adb: error: ...").
_UNREACHABLE = re.compile(
    r"^adb: (?:error: )?(?:failed to get feature set: )?"
    r"(device offline|device '[^']*' not found|no devices/emulators found"
    r"|device still (?:connecting|authorizing))",
    re.M,
)
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
# android.os.PowerManager THERMAL_STATUS_* (what `dumpsys thermalservice` prints as a number).
THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")


class AdbConnectionError(DeviceError):
    """The phone dropped off USB (or went offline) and did not come back in time.

    `results` holds the models finished before the connection was lost.
    """

    def __init__(self, message: str, results: Sequence[BenchResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class DelegationError(DeviceError):
    """The GPU/NNAPI delegate did not take the whole graph (with full delegation required)."""


class _Timeout(DeviceError):
    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


class AdbDevice(Device):
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

    def read_thermal(self) -> dict[str, Any]:
        """Thermal status, zone temperatures (deg C) and current CPU frequencies (kHz).

        One shell call: `dumpsys thermalservice` (its "Thermal Status: N", N as
        PowerManager.THERMAL_STATUS_*) and `grep -H .` over the thermal zones' type/temp and
        the CPUs' scaling_cur_freq. Missing pieces are left out (None status).
        """
        zone, cpufreq = "/sys/class/thermal/thermal_zone*", "/sys/devices/system/cpu/cpu*"
        command = (
            f"dumpsys thermalservice; grep -H . {zone}/type {zone}/temp "
            f"{cpufreq}/cpufreq/scaling_cur_freq"
        )
        proc = self._device_call(["shell", command], "reading the thermal state")
        text = proc.stdout
        m = re.search(r"^Thermal Status: (\d+)", text, flags=re.M)
        status = int(m.group(1)) if m else None
        types, temps, freqs = {}, {}, {}
        for path, value in re.findall(r"^(/sys/\S+):(\S+)\s*$", text, flags=re.M):
            if m := re.search(r"thermal_zone(\d+)/(type|temp)$", path):
                (types if m.group(2) == "type" else temps)[m.group(1)] = value
            elif m := re.search(r"/(cpu\d+)/cpufreq/scaling_cur_freq$", path):
                freqs[m.group(1)] = int(value)
        zones = {}
        for n, milli in temps.items():
            try:
                zones[types.get(n, f"zone{n}")] = int(milli) / 1000.0
            except ValueError:
                continue
        return {
            "status": status,
            "status_name": THERMAL_STATUS[status] if status is not None and status < 7 else None,
            "zones_c": zones,
            "cpu_khz": dict(sorted(freqs.items(), key=lambda kv: int(kv[0][3:]))),
            "time": time.time(),
        }

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

    def _cooled_down(self) -> dict[str, Any]:
        """The thermal reading before a model, after waiting for status none if asked to."""
        reading = self.read_thermal()
        deadline = time.monotonic() + self.cooldown_s
        polls = 0
        while (reading["status"] or 0) > 0 and time.monotonic() < deadline:
            log.info("thermal status %s; cooling down", reading["status_name"])
            time.sleep(self.COOLDOWN_POLL_S)
            reading = self.read_thermal()
            polls += 1
        if polls:
            reading["cooldown_polls"] = polls
        return reading

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

    # --- adb plumbing -----------------------------------------------------------------------

    def _serial(self) -> str:
        """The device to talk to, checked against `adb devices -l`."""
        if self._resolved is not None:
            return self._resolved
        devices = self._devices()
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
        if state.startswith("no permissions"):
            raise DeviceError(
                f"device {chosen}: {state}. On Linux install the android udev rules (package "
                "android-sdk-platform-tools-common) and add yourself to plugdev, then replug"
            )
        if state != "device":
            raise DeviceError(
                f"device {chosen} is {state}: wait for it to finish {state}, reconnect the "
                "cable or run `adb kill-server`, then check `adb devices`"
                if state in ("authorizing", "connecting")
                else f"device {chosen} is {state}: reconnect the cable or run `adb kill-server`, "
                "then check `adb devices`"
            )
        self._resolved = chosen
        return chosen

    def _devices(self) -> dict[str, str]:
        proc = self._adb(["devices", "-l"], "listing devices")
        if proc.returncode != 0:
            raise DeviceError(f"`{self.adb} devices -l` failed: {_tail(proc)}")
        return parse_devices(proc.stdout)

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
        """Run `adb -s SERIAL ARGS...`; on a lost connection wait for the device, retry once."""
        serial = self._serial()
        for attempt in (1, 2):
            proc = self._adb(["-s", serial, *args], what)
            lost = _connection_lost(proc)
            if lost is None:
                return proc
            if attempt == 1:
                log.warning("adb lost %s while %s (%s); waiting for it, retrying once",
                            serial, what, lost)  # fmt: skip
                self._wait_for(serial, what, lost)
        raise AdbConnectionError(
            f"lost the connection to {serial} twice while {what} ({lost}); check the cable, the "
            "phone's USB mode and `adb devices`, then rerun (--resume keeps finished results)"
        )

    def _wait_for(self, serial: str, what: str, lost: str) -> None:
        try:
            self._adb(["-s", serial, "wait-for-device"], f"waiting for {serial}",
                      timeout=self.reconnect_timeout_s)  # fmt: skip
        except _Timeout as exc:
            raise AdbConnectionError(
                f"lost the connection to {serial} while {what} ({lost}) and it did not come "
                f"back within {self.reconnect_timeout_s:g} s; check the cable and `adb devices`"
            ) from exc

    def _adb(
        self, args: list[str], what: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.adb, *args]
        limit = self.timeout_s if timeout is None else timeout
        try:
            return subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,  # `adb shell` would otherwise read the caller's stdin
                capture_output=True,
                text=True,
                errors="replace",
                timeout=limit,
            )
        except FileNotFoundError as exc:
            raise DeviceError(
                f"adb not found ({self.adb!r}); install Android SDK platform-tools and put adb "
                "on PATH (docs/android.md)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""
            output = out.decode(errors="replace") if isinstance(out, bytes) else out
            pid = re.search(r"srsearch-pid:(\d+)", output)
            stopped = f"; stopped it on the phone (pid {pid.group(1)})" if pid else ""
            raise _Timeout(
                f"{what}: adb took over {limit:g} s{stopped}; raise the timeout or lower --runs",
                output,
            ) from exc

    def _check(self, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0:
            raise DeviceError(f"`{shlex.join(proc.args)}` failed: {_tail(proc)}")


def _connection_lost(proc: subprocess.CompletedProcess[str]) -> str | None:
    """Why `proc` failed for want of a device, or None if it did not."""
    m = _UNREACHABLE.search(proc.stderr or "")
    if m:
        return m.group(0)
    if proc.returncode == 255:
        return "exit 255: the connection dropped mid-command"
    return None


def parse_devices(text: str) -> dict[str, str]:
    """`adb devices [-l]` output -> {serial: state}.

    States are transport.cpp's to_string(ConnectionState): device, offline, unauthorized,
    authorizing, connecting, bootloader, ..., and "no permissions (REASON); see [URL]" (with
    spaces). The long form appends " DEVPATH product:... model:... device:... transport_id:N".
    """
    devices = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        serial, _, rest = line.replace("\t", " ", 1).partition(" ")
        rest = rest.strip()
        m = re.match(r"(no permissions.*?\]|\S+)", rest)
        if serial and m:
            devices[serial] = m.group(1)
    return devices


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
