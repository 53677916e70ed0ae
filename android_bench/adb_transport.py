"""The adb transport of `AdbDevice`: the real `adb` command line (argument lists, never a host
shell, stdin closed), which device to talk to, and a lost connection waited for and retried once.

A lost connection is recognised by adb's own words (`adb: device offline`, `adb: device 'SERIAL'
not found`, `adb: error: failed to get feature set: ...`) or by exit status 255 with no text (USB
unplugged mid-command: commandline.cpp read_and_dump_protocol).
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from android_bench.device import BenchResult, DeviceError

log = logging.getLogger("android_bench.adb")  # one logger for the whole adb target

# adb's own words for a device that is not reachable (transport.cpp acquire_one_transport,
# printed by error_exit as "adb: ..." or by the sync client as "adb: error: ...").
_UNREACHABLE = re.compile(
    r"^adb: (?:error: )?(?:failed to get feature set: )?"
    r"(device offline|device '[^']*' not found|no devices/emulators found"
    r"|device still (?:connecting|authorizing))",
    re.M,
)


class AdbConnectionError(DeviceError):
    """The phone dropped off USB (or went offline) and did not come back in time.

    `results` holds the models finished before the connection was lost.
    """

    def __init__(self, message: str, results: Sequence[BenchResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class _Timeout(DeviceError):
    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


class AdbTransport:
    """adb calls for a device class that sets ``adb``, ``serial``, ``timeout_s``,
    ``reconnect_timeout_s``, ``remote_dir`` and ``_resolved`` (`AdbDevice`)."""

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


def _tail(proc: subprocess.CompletedProcess[str], n: int = 8) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return "\n".join(text.strip().splitlines()[-n:]) or "(no output)"
