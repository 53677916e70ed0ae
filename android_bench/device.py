"""What every benchmark target offers: a stable identity and per-model latency statistics.

The latency builder takes a `Device` (the host here, a phone over adb) and never cares which:
it exports small models, hands their paths to `Device.benchmark` in batches and keys the
results by `Device.fingerprint_id()`.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srsearch.errors import UserError


class DeviceError(UserError):
    """A benchmark target is missing, misconfigured or failed; the message says what to do."""


@dataclass(frozen=True)
class BenchResult:
    """Latency statistics of one model on one device, in milliseconds.

    Devices that see every timed run (the host) fill `samples_ms` and compute all statistics
    from it. `benchmark_model` on a phone prints only aggregates, so there `samples_ms` is
    empty, `p10_ms`/`p90_ms` are None, and `median_ms` is the tool's own median where it prints
    one (recent builds) or else its average, flagged by `median_is_avg=True`.
    """

    model: Path
    median_ms: float
    mean_ms: float
    p10_ms: float | None
    p90_ms: float | None
    min_ms: float
    samples_ms: tuple[float, ...] = ()
    max_ms: float | None = None
    std_ms: float | None = None
    runs: int = 0
    """Number of timed runs the statistics cover."""
    init_ms: float | None = None
    """Model load + interpreter/delegate setup, before the first inference."""
    first_ms: float | None = None
    """The first (cold) inference, part of the warm-up."""
    memory_mb: float | None = None
    """Resident memory grown while loading and running the model (approximate)."""
    median_is_avg: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Target-specific values (e.g. benchmark_model's p5/p95) kept for the record."""

    @classmethod
    def from_samples(cls, model: Path, samples_ms: Sequence[float], **extra: Any) -> BenchResult:
        """Statistics of raw per-run timings (linear-interpolated percentiles)."""
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError(f"no timed runs for {model}")
        p10, median, p90 = np.percentile(s, [10, 50, 90])
        return cls(
            model=Path(model),
            median_ms=float(median),
            mean_ms=float(s.mean()),
            p10_ms=float(p10),
            p90_ms=float(p90),
            min_ms=float(s.min()),
            max_ms=float(s.max()),
            std_ms=float(s.std()),
            runs=int(s.size),
            samples_ms=tuple(float(v) for v in s),
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the model path as a string."""
        d = asdict(self)
        d["model"] = str(self.model)
        d["samples_ms"] = list(self.samples_ms)
        return d


ResultCallback = Callable[[BenchResult], None]


class Device(abc.ABC):
    """A target that runs `.tflite` files and reports their latency."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Stable identity of the hardware + runtime + settings that latencies depend on.

        Always holds "kind" (host, adb), "name" (CPU or phone model), "threads" and
        "delegate". Unit-specific values (serial numbers, host names) are left out so that
        two identical phones share a latency table.
        """

    def fingerprint_id(self) -> str:
        """Short, stable, file-name-safe key: readable slug + hash of the full fingerprint.

        E.g. "host-intel-xeon-processor-2t-xnnpack-3f9c01ab".
        """
        fp = self.fingerprint()
        digest = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()
        name = _slug(str(fp.get("name", "")))[:28].strip("-") or "unknown"
        return f"{fp['kind']}-{name}-{fp['threads']}t-{fp['delegate']}-{digest[:8]}"

    @abc.abstractmethod
    def benchmark(
        self,
        tflite_paths: Sequence[Path],
        runs: int = 20,
        warmup: int = 3,
        *,
        on_result: ResultCallback | None = None,
    ) -> list[BenchResult]:
        """Benchmark each model separately, in order.

        Args:
            tflite_paths: Models to time; each is loaded fresh.
            runs: Timed inferences per model.
            warmup: Untimed inferences before them.
            on_result: Called with each result as soon as it exists, so a caller can write
                results as it goes.

        Returns:
            One `BenchResult` per path, in the same order.
        """


def check_paths(tflite_paths: Sequence[Path], runs: int, warmup: int) -> list[Path]:
    """Validate benchmark arguments the same way for every device."""
    if runs < 1:
        raise UserError(f"runs={runs}: need at least 1 timed run")
    if warmup < 0:
        raise UserError(f"warmup={warmup}: must be >= 0")
    paths = [Path(p) for p in tflite_paths]
    for p in paths:
        if not p.is_file():
            raise UserError(f"model {p} does not exist; export it first (srsearch export)")
    return paths


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")
