"""``srsearch pipeline``: the main job, as a list of stages over one run directory.

Each stage writes its outputs into ``runs/<timestamp>/<stage>/`` and is marked done in
``stages.json`` only when it finishes; rerunning on the same run directory skips finished stages
and resumes an interrupted one (training stages resume from their last checkpoint).

Stages: supernet (stage 1), latency table on the target, search (stages 2 and 3 + fine-tune),
hand-designed baselines trained with the same data and steps as the fine-tune, LiteRT export of
every model, the 720p benchmark on the target, evaluation, ``report.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from srsearch.common import atomic
from srsearch.common.errors import UserError
from srsearch.pipeline.config import CONTEXT, RUN_FIELDS, SUPERNET_LR_PATCH, PipelineConfig
from srsearch.pipeline.report import _report
from srsearch.pipeline.stages import (
    LATENCY_MAPE_WARN,
    Stage,
    StageLog,
    _bench,
    _evaluate,
    _export,
    _latency,
    _log,
    _search,
    _supernet,
    _train_baselines,
    baseline_steps,
    latency_warning,
)

__all__ = [
    "CONTEXT", "LATENCY_MAPE_WARN", "RUN_FIELDS", "STAGES", "SUPERNET_LR_PATCH",
    "PipelineConfig", "Stage", "StageLog", "baseline_steps", "latency_warning", "run_pipeline",
]

STAGES: tuple[Stage, ...] = (
    Stage("supernet", _supernet, "stage 1: train the weight-sharing supernet"),
    Stage("latency", _latency, "measure the latency table on the target and validate it"),
    Stage("search", _search, "stages 2 and 3: architecture and pruning search, fine-tune"),
    Stage("baselines", _train_baselines, "train the baselines (fixed, scaled to the budget) and "
          "the searched architecture from scratch, as many steps as supernet + fine-tune"),
    Stage("export", _export, "LiteRT export of every model, checked against PyTorch"),
    Stage("bench", _bench, "720p latency of every exported model on the target"),
    Stage("evaluate", _evaluate, "PSNR/SSIM of every model, bicubic alongside"),
    Stage("report", _report, "write report.md and plots"),
)


def run_pipeline(cfg: PipelineConfig, run_dir: Path) -> Path:
    """Run every unfinished stage in order; returns the report path."""
    from srsearch.common.rundir_lock import run_dir_lock

    with run_dir_lock(Path(run_dir), "--run-dir") as run_dir:
        return _run_pipeline(cfg, run_dir)


# Keys that only the search stage (and the report after it) reads: until that stage is done,
# a rerun may change them, so a budget the search refused can be retried in the same run dir.
_SEARCH_ONLY = ("budget_ms", "budget_floor", "overshoot", "search_trials", "stage3_trials",
                "rerank", "rerank_steps", "rerank_from", "rerank_pool", "rerank_family",
                "train_rep", "latency_rounds", "measured_floor", "check_speed", "search_data")


# What a run's config.json written before a key existed implies for it.
_BEFORE = {"train_rep": "none", "rerank_family": 0, "check_speed": "raw"}


def _run_pipeline(cfg: PipelineConfig, run_dir: Path) -> Path:
    cfg_path = run_dir / "config.json"
    want = json.loads(json.dumps(asdict(cfg)))
    saved = atomic.read_json(cfg_path)
    have = {**_BEFORE, **saved} if saved else want  # none yet: this run starts it
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if diff:
        if set(diff) <= set(_SEARCH_ONLY) and "search" not in StageLog.load(run_dir).done:
            _log(f"search settings changed before the search ran ({', '.join(diff)}); "
                 f"updating {cfg_path}")
        else:
            details = "; ".join(f"{k}: {have.get(k)!r} -> {want.get(k)!r}" for k in diff)
            raise UserError(
                f"--run-dir {run_dir} was started with another config ({cfg_path}: {details}); "
                "use a new run directory or the same config"
            )
    atomic.write_json(cfg_path, want)
    log = StageLog.load(run_dir)
    for i, stage in enumerate(STAGES, 1):
        head = f"[pipeline] stage {i}/{len(STAGES)} {stage.name}: {stage.description}"
        if stage.name in log.done:
            print(f"{head} (done, skipped)", flush=True)
            continue
        print(head, flush=True)
        t0 = time.perf_counter()
        result = stage.run(cfg, run_dir)
        print(
            f"[pipeline] stage {stage.name} finished in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        log.mark(stage.name, result)
    return run_dir / "report.md"
