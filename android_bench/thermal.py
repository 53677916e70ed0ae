"""Thermal readings of a phone over adb, and the wait for it to cool down before a model."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

log = logging.getLogger("android_bench.adb")  # one logger for the whole adb target

# android.os.PowerManager THERMAL_STATUS_* (what `dumpsys thermalservice` prints as a number).
THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")


class ThermalReadings:
    """`read_thermal` and the cool-down wait for a device class that sets ``cooldown_s`` and
    ``COOLDOWN_POLL_S`` and has ``_device_call`` (`AdbDevice`)."""

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
