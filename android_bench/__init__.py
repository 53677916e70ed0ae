"""Benchmark targets for LiteRT models: this machine (`HostDevice`) and phones (`AdbDevice`)."""

from __future__ import annotations

from typing import Any

from android_bench.adb import AdbConnectionError, AdbDevice, DelegationError
from android_bench.device import BenchResult, Device, DeviceError
from android_bench.host import HostDevice

__all__ = [
    "AdbConnectionError",
    "AdbDevice",
    "BenchResult",
    "Device",
    "DelegationError",
    "DeviceError",
    "HostDevice",
    "device_from_target",
]

TARGETS = "'host', 'adb' (the only attached phone) or 'adb:SERIAL'"
_HOST_OPTIONS = {"threads", "delegate", "isolate", "timeout_s"}
_ADB_OPTIONS = {
    "benchmark_binary",
    "threads",
    "delegate",
    "cpu_mask",
    "adb",
    "timeout_s",
    "remote_dir",
    "max_secs",
    "allow_partial_delegation",
    "gpu_precision",
    "gpu_backend",
    "cooldown_s",
    "reconnect_timeout_s",
}


def device_from_target(target: str, **opts: Any) -> Device:
    """Build a device from a `--target` string.

    Args:
        target: "host", "adb" or "adb:SERIAL".
        **opts: Constructor options; None values are dropped so CLI defaults fall through.
            Options the target does not take (e.g. `benchmark_binary` for the host) raise.
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    kind, _, serial = target.partition(":")
    if kind == "host" and not serial:
        _check_options("host", opts, _HOST_OPTIONS)
        return HostDevice(**opts)
    if kind == "adb":
        _check_options("adb", opts, _ADB_OPTIONS)
        return AdbDevice(serial=serial or None, **opts)
    raise DeviceError(f"unknown target {target!r}; use {TARGETS}")


def _check_options(kind: str, opts: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(opts) - allowed)
    if extra:
        raise DeviceError(
            f"--target {kind} does not take {', '.join(extra)}; drop it or pick the target "
            f"it belongs to (it takes: {', '.join(sorted(allowed))})"
        )
