"""Check a `LatencyModel` against end-to-end measurements of nets it was not fitted on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from android_bench import BenchResult, Device
from srsearch.common import atomic
from srsearch.common.errors import UserError
from srsearch.latency.build import net_job, spanning_archs
from srsearch.latency.lut import TABLE_INDENT, arch_id
from srsearch.latency.model import LatencyModel
from srsearch.latency.runner import NET_FIELDS, Exporter, Job, add_net_round, runner
from supernet.space import space_from_dict


def summarize(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """MAPE, the largest error and the Spearman rank correlation of predictions.

    Also a diagnostic for targets whose speed drifts (a shared host's load, a phone's thermal
    state): ``speed_ratio`` = median(measured / predicted), and ``scale_free_mape_pct``, the
    MAPE left once predictions are multiplied by it, i.e. the error a uniform change of the
    machine's speed between build and validation does not explain. It is not the model's
    accuracy (the ratio is fitted on the same nets); `mape_pct` is.

    Returns:
        {"n", "mape_pct", "max_error_pct" (signed, of the net with the largest |error|),
        "max_error_index", "spearman", "speed_ratio", "scale_free_mape_pct"}.
    """
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if len(p) != len(m) or len(p) < 2:
        raise ValueError(f"need >= 2 (predicted, measured) pairs, got {len(p)} and {len(m)}")
    err = (p - m) / m * 100
    worst = int(np.argmax(np.abs(err)))
    ratio = float(np.median(m / p))
    return {
        "n": len(p),
        "mape_pct": float(np.mean(np.abs(err))),
        "max_error_pct": float(err[worst]),
        "max_error_index": worst,
        "spearman": float(stats.spearmanr(p, m).statistic),
        "speed_ratio": ratio,
        "scale_free_mape_pct": float(np.mean(np.abs(ratio * p - m) / m) * 100),
    }


def validation_path(lut_path: Path) -> Path:
    """Where `latency validate` writes its report: ``lut.validate.json`` next to ``lut.json``."""
    lut_path = Path(lut_path)
    return lut_path.with_name(f"{lut_path.stem}.validate.json")


def validate(
    model: LatencyModel,
    device: Device,
    out: Path,
    *,
    n: int = 30,
    seed: int = 1,
    runs: int | None = None,
    warmup: int | None = None,
    passes: int = 3,
    exporter: Exporter | None = None,
    jobs: int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure ``n`` nets spanning the table's space end to end and compare with predictions.

    The nets are placed like the fit nets (`spanning_archs`, by predicted latency) with another
    seed, never one the fit saw. Measurements go to ``out`` as they come; a rerun reuses the
    ones already there for the same target.

    Args:
        n, seed: How many nets, and the seed of their sample.
        runs, warmup: Per net and pass; default: the build's whole-net settings.
        passes: Rounds over all nets (every other one in reverse order); the measured value
            is the median of a net's rounds, and "pass_spread_pct" (the mean (max - min) /
            median) shows how much of the error is measurement noise.
        exporter, jobs: As for `build_table`.
        on_progress: on_progress(stage, done, total), stage "export" or "timing".

    Returns:
        The report written to ``out``: `summarize` fields, "worst" (that net), "nets" (per net
        arch, predicted_ms, measured_ms, error_pct, ...), target and settings.
    """
    table = model.table
    table.check_fingerprint(device.fingerprint(), device.fingerprint_id(), "the latency table")
    if not table.space:
        raise UserError("the latency table records no search space; rebuild it")
    space = space_from_dict(table.space)
    runs = runs or table.settings.get("net_runs", 4)
    warmup = warmup if warmup is not None else table.settings.get("warmup", 1)
    archs = spanning_archs(space, n, seed, model.predict, exclude=table.nets)
    by_id = {arch_id(a.to_dict()): a for a in archs}
    measured = {
        k: v for k, v in _previous(out, table.fingerprint_id, table.export).items() if k in by_id
    }
    progress = on_progress or (lambda stage, done, total: None)

    def rounds_done(key: str) -> int:
        return len(measured.get(key, {}).get("round_ms", []))

    def report() -> dict[str, Any]:
        rows = []
        for key, a in by_id.items():
            m = measured.get(key)
            if m is not None:
                pred = model.predict(a)
                err = (pred - m["median_ms"]) / m["median_ms"] * 100
                rows.append(
                    {**m, "predicted_ms": pred, "measured_ms": m["median_ms"], "error_pct": err}
                )
        summary: dict[str, Any] = {}
        spreads = [_spread(r["round_ms"]) for r in rows if len(r["round_ms"]) > 1]
        if spreads:
            summary["pass_spread_pct"] = float(np.mean(spreads))
        if len(rows) >= 2:
            measured_ms = [r["measured_ms"] for r in rows]
            summary.update(summarize([r["predicted_ms"] for r in rows], measured_ms))
            summary["worst"] = rows[summary.pop("max_error_index")]
        return {
            "fingerprint_id": table.fingerprint_id,
            "fingerprint": table.fingerprint,
            "export": table.export,
            "scale": table.scale,
            "out_size": list(table.out_size),
            "fit": table.fit and {k: table.fit[k] for k in ("form", "coef", "n")},
            "seed": seed,
            "runs": runs,
            "passes": passes,
            "build_load1": _median([e.get("load1") for e in table.entries.values()]),
            "load1": _median([r.get("load1") for r in rows]),
            "complete": all(rounds_done(k) >= passes for k in by_id),
            **summary,
            "nets": rows,
        }

    done = 0
    total = sum(max(0, passes - rounds_done(k)) for k in by_id)

    def record(job: Job, result: BenchResult) -> None:
        nonlocal done
        measured[job.id] = add_net_round(measured.get(job.id), by_id[job.id], result, table.lr_hw)
        atomic.write_json(out, report(), indent=TABLE_INDENT)
        done += 1
        progress("timing", done, total)

    with runner(device, exporter, jobs) as run:
        todo = [
            net_job(a, run.workdir / f"net{i:04d}.tflite", table.lr_hw, table.export)
            for i, (k, a) in enumerate(by_id.items())
            if rounds_done(k) < passes
        ]
        exported = 0

        def on_exported(job: Job) -> None:
            nonlocal exported
            exported += 1
            progress("export", exported, len(todo))

        progress("export", 0, len(todo))
        run.export(todo, on_exported)
        progress("timing", 0, total)
        for r in range(1, passes + 1):
            round_jobs = [j for j in todo if rounds_done(j.id) < r]
            run.time(round_jobs if r % 2 else round_jobs[::-1], runs, warmup, record)
    final = report()
    atomic.write_json(out, final, indent=TABLE_INDENT)
    return final


def _median(values: Sequence[float | None]) -> float | None:
    """Median of the known values (load averages), None without any."""
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def _spread(values: Sequence[float]) -> float:
    """(max - min) / median of one net's pass medians, %: the measurement noise."""
    return (max(values) - min(values)) / float(np.median(values)) * 100


def _previous(out: Path, fingerprint_id: str, export: dict[str, Any]) -> dict[str, dict]:
    """Measurements already in ``out`` for the same target and export settings."""
    from srsearch.common import atomic

    old = atomic.read_json(out)
    if old is None:
        return {}
    if old.get("fingerprint_id") != fingerprint_id or old.get("export") != export:
        return {}
    return {arch_id(r["arch"]): {k: r.get(k) for k in NET_FIELDS} for r in old.get("nets", [])}
