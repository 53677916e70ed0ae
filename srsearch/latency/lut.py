"""The latency table: per-op latencies measured on one target, as a JSON file.

A table holds, for one device fingerprint, one scale and one output size:

- ``entries``: one per distinct `LayerSpec` key of the search space (op, cin, cout, k, h, w,
  act), with the probe statistics (`srsearch.latency.probes`);
- ``nets``: end-to-end measurements of whole subnets, what the whole-network term is fitted on;
- ``fit``: that term (`srsearch.latency.model.fit`).

The file is rewritten atomically after every finished measurement, so an interrupted build
keeps everything it finished and a rerun measures only what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srsearch.common import atomic
from srsearch.common.errors import UserError
from srsearch.latency.probes import key_str
from supernet.space import LayerSpec

TABLE_INDENT = 1  # JSON indent of tables and validation reports (they are large)
FORMAT = "srsearch-latency-lut/1"
_KEY_FIELDS = ("op", "cin", "cout", "k", "h", "w", "act")


class UnknownKeyError(UserError):
    """A layer the table has no entry for (the space or the size changed since the build)."""


def key_to_dict(spec: LayerSpec) -> dict[str, Any]:
    """JSON form of a key (the `block` tag is not part of it)."""
    return {f: getattr(spec, f) for f in _KEY_FIELDS}


def key_from_dict(d: dict[str, Any]) -> LayerSpec:
    return LayerSpec(**{f: d[f] for f in _KEY_FIELDS})


@dataclass
class LatencyTable:
    """Everything `latency build` measured for one target, scale and output size.

    Attributes:
        fingerprint: `Device.fingerprint()` of the target the numbers were measured on.
        fingerprint_id: `Device.fingerprint_id()` of it, for messages and file names.
        target: How to rebuild that device: {"target": "host" | "adb[:SERIAL]", "options":
            {...}} for `android_bench.device_from_target` (validate uses it).
        scale: Upscaling factor.
        out_size: HR output (width, height) the table is for, e.g. (1280, 720).
        lr_hw: LR input (height, width) every op runs at, `build.lr_size(out_size, scale)`.
        export: Export settings of the whole-net files ({"channels_last_io": bool}).
        space: The `SearchSpace` fields the table was last built for (for sampling nets).
        settings: Runs/warm-up used, for the record.
        io_baseline_ms: Median time of one `invoke` of a tiny model, subtracted from probes.
        entries: {key: record}; record has "median_ms" (the value used) and probe statistics.
        nets: {arch JSON: record}; record has "arch", "median_ms" and statistics.
        fit: The fitted whole-network term, or None before the fit.
    """

    fingerprint: dict[str, Any]
    fingerprint_id: str
    target: dict[str, Any]
    scale: int
    out_size: tuple[int, int]
    lr_hw: tuple[int, int]
    export: dict[str, Any]
    space: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    io_baseline_ms: float | None = None
    entries: dict[LayerSpec, dict[str, Any]] = field(default_factory=dict)
    nets: dict[str, dict[str, Any]] = field(default_factory=dict)
    fit: dict[str, Any] | None = None

    def ms(self, spec: LayerSpec) -> float:
        """The table's latency for one op; UnknownKeyError when it was never measured."""
        entry = self.entries.get(spec)
        if entry is None:
            raise UnknownKeyError(
                f"the latency table for {self.fingerprint_id} (x{self.scale}, "
                f"{_size(self.out_size)}) has no entry for layer {key_str(spec)}"
                f"{f' ({spec.block})' if spec.block else ''}: the architecture is outside the "
                "space the table was built for. Rebuild it for this space with `srsearch "
                "latency build` (a rerun on the same --out measures only the missing layers)."
            )
        return entry["median_ms"]

    def check_fingerprint(
        self, fingerprint: dict[str, Any], fingerprint_id: str, what: str
    ) -> None:
        """Refuse to mix targets: error naming both when ``fingerprint`` differs."""
        if fingerprint == self.fingerprint:
            return
        diff = sorted(
            k
            for k in set(fingerprint) | set(self.fingerprint)
            if fingerprint.get(k) != self.fingerprint.get(k)
        )
        details = ", ".join(
            f"{k}: {self.fingerprint.get(k)!r} vs {fingerprint.get(k)!r}" for k in diff
        )
        raise UserError(
            f"{what} was measured on {self.fingerprint_id} but the current device is "
            f"{fingerprint_id} ({details}); latencies of different targets do not mix. Use "
            "another --out for this device, or run on the target the table was built for."
        )

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "fingerprint_id": self.fingerprint_id,
            "target": self.target,
            "scale": self.scale,
            "out_size": list(self.out_size),
            "lr_hw": list(self.lr_hw),
            "export": self.export,
            "space": self.space,
            "settings": self.settings,
            "io_baseline_ms": self.io_baseline_ms,
            "entries": [{"key": key_to_dict(k), **v} for k, v in self.entries.items()],
            "nets": list(self.nets.values()),
            "fit": self.fit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyTable:
        if d.get("format") != FORMAT:
            raise UserError(
                f"latency table format is {d.get('format')!r}, expected {FORMAT!r}; rebuild it "
                "with `srsearch latency build`"
            )
        entries = {}
        for e in d["entries"]:
            e = dict(e)
            entries[key_from_dict(e.pop("key"))] = e
        return cls(
            fingerprint=d["fingerprint"],
            fingerprint_id=d["fingerprint_id"],
            target=d["target"],
            scale=d["scale"],
            out_size=tuple(d["out_size"]),
            lr_hw=tuple(d["lr_hw"]),
            export=d["export"],
            space=d.get("space") or {},
            settings=d.get("settings") or {},
            io_baseline_ms=d.get("io_baseline_ms"),
            entries=entries,
            nets={arch_id(n["arch"]): n for n in d.get("nets", [])},
            fit=d.get("fit"),
        )

    def save(self, path: Path) -> None:
        """Write atomically (temporary file + rename): a kill never leaves half a table."""
        atomic.write_json(path, self.to_dict(), indent=TABLE_INDENT)

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"latency table {path} does not exist; build it with `srsearch "
                "latency build --out PATH`"
            )
        try:
            d = json.loads(path.read_text())
            return cls.from_dict(d)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(
                f"{path} is not a latency table ({type(exc).__name__}: {exc}); rebuild it with "
                "`srsearch latency build`"
            ) from None


def arch_id(arch: dict[str, Any]) -> str:
    """Canonical string of an architecture dict (key of `LatencyTable.nets`)."""
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}x{wh[1]}"
