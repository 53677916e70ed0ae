"""A search run's record of its trials: ``trials.csv`` (appended as trials finish, rewritten
whole at the end) and ``pareto.png``."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from srsearch.search._optuna import record


def _csv_fields() -> list[str]:
    return ["stage", "number", "feasible", "latency_ms", "psnr", "ssim", "scored", "arch",
            "ratios"]


def write_trials_csv(path: Path, stages: Mapping[str, Sequence[dict[str, Any]]]) -> None:
    rows = [{"stage": stage, **r, "ratios": json.dumps(r["ratios"]) if "ratios" in r else ""}
            for stage, recs in stages.items() for r in recs]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_csv_fields())
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _appender(path: Path, stage: str):
    """on_trial callback appending one row per finished trial (rewritten whole at the end)."""
    def on_trial(t) -> None:
        new = not path.is_file()
        r = record(t)
        if stage == "stage3":
            r["ratios"] = json.dumps(dict(t.params))
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_csv_fields())
            if new:
                w.writeheader()
            w.writerow({"stage": stage, **r})
    return on_trial


def plot_pareto(path: Path, trials: Sequence[dict[str, Any]], budget_ms: float,
                chosen: tuple[float, float], final: tuple[float, float] | None = None,
                baselines: Mapping[str, tuple[float, float]] | None = None,
                floor_ms: float = 0.0, stage2_budget_ms: float | None = None) -> None:
    """PSNR against predicted latency of the feasible stage-2 trials, the front, the budget
    (and latency floor, and stage 2's own budget when it overshoots), the chosen point (and
    the pruned one), and baselines given as name -> (ms, PSNR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted({(r["latency_ms"], r["psnr"]) for r in trials if r["feasible"]})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if pts:
        ax.scatter(*zip(*pts, strict=True), s=12, c="0.6", label="stage-2 candidates")
        front, best = [], -math.inf
        for ms, p in pts:
            if p > best:
                front.append((ms, p))
                best = p
        ax.step(*zip(*front, strict=True), where="post", c="0.3", lw=1, label="front")
    ax.axvline(budget_ms, c="tab:red", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    if stage2_budget_ms and stage2_budget_ms != budget_ms:
        ax.axvline(stage2_budget_ms, c="tab:purple", ls="-.", lw=1,
                   label=f"stage-2 budget {stage2_budget_ms:.3g} ms")
    if floor_ms:
        ax.axvline(floor_ms, c="tab:orange", ls=":", lw=1, label=f"floor {floor_ms:.3g} ms")
    ax.scatter([chosen[0]], [chosen[1]], marker="*", s=160, c="tab:red", zorder=3,
               label="stage-2 choice")
    if final is not None and final != chosen:
        ax.scatter([final[0]], [final[1]], marker="D", s=60, c="tab:blue", zorder=3,
                   label="after stage-3 pruning")
    for name, (ms, p) in (baselines or {}).items():
        ax.scatter([ms], [p], marker="s", s=40, c="tab:green", zorder=3)
        ax.annotate(name, (ms, p), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("Y-PSNR, inherited weights (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
