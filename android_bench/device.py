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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from srcore.errors import UserError


class DeviceError(UserError):
    """A benchmark target is missing, misconfigured or failed; the message says what to do."""


@dataclass(frozen=True)
class BenchResult:
    """Latency statistics of one model on one device, in milliseconds.

    Devices that see every timed run (the host) fill `samples_ms` and compute all statistics
    from it. `benchmark_model` on a phone prints only aggregates, so there `samples_ms` is
    empty, `p10_ms`/`p90_ms` are None, and `median_ms` is the tool's own median where it prints
    one (recent builds) or else its average, flagged by `median_is_avg=True`.

    Percentiles mean the same on both targets: benchmark_model's `StatWithPercentiles`
    (xla/tsl/util/stats_calculator.h) takes `std::nth_element` at index `n * p / 100` of the
    runs, i.e. the sorted value at that index, no interpolation (the median of an even count is
    the upper middle value); `from_samples` does the same. `std_ms` is the population deviation.
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
    """Growth of the peak resident set (`getrusage` ru_maxrss), in MiB, from before loading the
    model to after the last run: benchmark_model's "Memory footprint delta ... overall"
    (profiling/memory_info.cc) on a phone; on the host the same high-water mark, reset to the
    current size just before loading (Linux clear_refs), in the process that runs the model."""
    median_is_avg: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Target-specific values (e.g. benchmark_model's p5/p95) kept for the record."""

    @classmethod
    def from_samples(cls, model: Path, samples_ms: Sequence[float], **extra: Any) -> BenchResult:
        """Statistics of raw per-run timings, percentiles as benchmark_model's (see above)."""
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError(f"no timed runs for {model}")
        p5, p10, median, p90, p95 = (nth_percentile(s, p) for p in (5, 10, 50, 90, 95))
        extra = {"p5_ms": p5, "p95_ms": p95, **extra.pop("extra", {}), **extra}
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
            **{k: extra.pop(k) for k in list(extra) if k in _FIELDS},
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the model path as a string."""
        d = asdict(self)
        d["model"] = str(self.model)
        d["samples_ms"] = list(self.samples_ms)
        return d


_FIELDS = {f for f in BenchResult.__dataclass_fields__ if f != "extra"}

ResultCallback = Callable[[BenchResult], None]


def nth_percentile(values: Sequence[float] | np.ndarray, p: int) -> float:
    """benchmark_model's percentile: the value `std::nth_element` puts at `n * p // 100`."""
    s = np.sort(np.asarray(values, dtype=np.float64))
    return float(s[min(len(s) - 1, len(s) * p // 100)])


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


    def benchmark_rounds(
        self,
        tflite_paths: Sequence[Path],
        rounds: int = 3,
        runs: int = 20,
        warmup: int = 3,
        *,
        done: Mapping[Path, int] | None = None,
        on_result: ResultCallback | None = None,
    ) -> list[BenchResult]:
        """`benchmark` in ``rounds`` interleaved passes (forward, backward, forward, ...), so
        that no model always runs first or in the same stretch of a drift. On the 2-core host,
        two trainings of one architecture read 30.51 and 29.18 ms in one single pass, and
        within 1.3 % of each other over four interleaved rounds (docs/latency.md).

        Args:
            done: Rounds a caller already has per path (`srsearch bench --resume`); those
                paths are timed only in the remaining rounds, and their results here come
                from those rounds alone.

        Returns:
            Per path, its round whose median is the median of its rounds' medians (the lower
            middle one for an even count), with ``extra["round_ms"]`` (every round's median)
            and ``extra["spread_pct"]`` (their range over that median).
        """
        if rounds < 1:
            raise UserError(f"rounds={rounds}: need at least 1")
        paths = [Path(p) for p in tflite_paths]
        have = {p: (done or {}).get(p, 0) for p in paths}
        got: dict[Path, list[BenchResult]] = {p: [] for p in paths}
        for r in range(1, rounds + 1):
            order = paths if r % 2 else paths[::-1]
            todo = [p for p in order if have[p] + len(got[p]) < r]
            if todo:
                results = self.benchmark(todo, runs, warmup, on_result=on_result)
                for p, res in zip(todo, results, strict=True):
                    got[p].append(res)
        out = []
        for p in paths:
            if not got[p]:
                continue
            ranked = sorted(got[p], key=lambda x: x.median_ms)
            mid = ranked[(len(ranked) - 1) // 2]
            medians = [x.median_ms for x in got[p]]
            spread = 100.0 * (max(medians) - min(medians)) / mid.median_ms
            out.append(replace(mid, extra={**mid.extra, "round_ms": medians,
                                           "spread_pct": spread}))
        return out


def check_paths(tflite_paths: Sequence[Path], runs: int, warmup: int) -> list[Path]:
    """Validate benchmark arguments the same way for every device."""
    if runs < 1:
        raise UserError(f"runs={runs}: need at least 1 timed run")
    if warmup < 1:
        # benchmark_model's "First inference" is the first warm-up run; with none it reports 0
        # and the first timed run pays the cold caches.
        raise UserError(f"warmup={warmup}: need at least 1 warm-up run (--warmup)")
    paths = [Path(p) for p in tflite_paths]
    for p in paths:
        if not p.is_file():
            raise UserError(f"model {p} does not exist; export it first (srsearch export)")
    return paths


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")
