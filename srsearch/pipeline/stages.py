"""The pipeline's stages up to the benchmark, each a function of the config and the run
directory that returns what `stages.json` records for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srsearch.common import atomic
from srsearch.pipeline.config import SUPERNET_LR_PATCH, PipelineConfig


@dataclass
class Stage:
    name: str
    run: Callable[[PipelineConfig, Path], dict[str, Any]]
    description: str = ""


@dataclass
class StageLog:
    path: Path
    done: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> StageLog:
        path = run_dir / "stages.json"
        return cls(path, json.loads(path.read_text()) if path.exists() else {})

    def mark(self, name: str, result: dict[str, Any]) -> None:
        self.done[name] = result
        atomic.write_json(self.path, self.done)


def _space(cfg: PipelineConfig):
    from supernet.space import make_space

    return make_space(cfg.scale, cfg.max_width, cfg.max_depth, skip=cfg.skip)


def _device(cfg: PipelineConfig):
    from android_bench import device_from_target

    opts = {"threads": cfg.threads}
    if cfg.target.startswith("adb"):
        opts["benchmark_binary"] = cfg.benchmark_binary
    return device_from_target(cfg.target, **opts)


def _supernet(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.train.supernet_training import train_supernet

    return train_supernet(
        _space(cfg),
        cfg.train_config(cfg.supernet_steps, steps_key="supernet_steps",
                         lr_patch=SUPERNET_LR_PATCH),
        run_dir / "supernet",
        resume=True,
    )


def _latency(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from rich.console import Console

    from srsearch.common.progress import ProgressBars
    from srsearch.data.image_io import default_cache_dir
    from srsearch.deploy.export import parse_size
    from srsearch.latency import LatencyModel, build_table, validate, validation_path
    from srsearch.latency.runner import default_jobs, probe_cache_dir

    device = _device(cfg)
    path = run_dir / "latency" / "lut.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    target = {"target": cfg.target, "options": {"threads": cfg.threads}}
    jobs = default_jobs()  # processes exporting models (before any timing)
    console = Console()
    with ProgressBars(console) as bars:
        build_table(
            device,
            _space(cfg),
            path,
            out_size=parse_size(cfg.out_size),
            target=target,
            runs=cfg.latency_runs,
            n_nets=cfg.latency_nets,
            jobs=jobs,
            precision=cfg.deploy_precision,
            probe_cache=probe_cache_dir(default_cache_dir()),
            on_progress=bars.update,
        )
    result: dict[str, Any] = {"lut": str(path)}
    if cfg.validate_nets:
        with ProgressBars(console) as bars:
            v = validate(LatencyModel.load(path), device, validation_path(path),
                         n=cfg.validate_nets, jobs=jobs, on_progress=bars.update)
        result.update({k: v[k] for k in ("mape_pct", "max_error_pct", "spearman") if k in v})
        warning = latency_warning(v.get("mape_pct"), cfg.validate_nets)
        if warning:
            _log(f"warning: {warning}")
    return result


LATENCY_MAPE_WARN = 10.0  # % on the validation nets; the table is usually within 3-6 % here


def latency_warning(mape_pct: float | None, n: int) -> str | None:
    """A warning when the latency model missed its ``n`` validation nets by more than
    ``LATENCY_MAPE_WARN`` % (MAPE; None: not validated), else None.

    The table's ops and the validation nets are timed minutes apart; when the target's speed
    changes in between (other jobs, a throttled or shared host), every prediction the search
    relies on is off by that factor, and the report should say so rather than look normal.
    """
    if mape_pct is None or mape_pct <= LATENCY_MAPE_WARN:
        return None
    return (
        f"The latency model missed its {n} validation nets by {mape_pct:.0f} % (MAPE; usually "
        f"under {LATENCY_MAPE_WARN:.0f} %): the target's speed changed while it was measured "
        "(other jobs, or a throttled host), so predicted latencies, and the net the search "
        "chose for the budget, are off. Rerun on an idle target in a new --run-dir, or check "
        "with `srsearch latency validate --lut LUT`."
    )


def _search(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.latency import LatencyModel
    from srsearch.search.run import run_search
    from srsearch.train.supernet_training import load_supernet

    rcfg = cfg.run_config()
    predictor = LatencyModel.load(run_dir / "latency" / "lut.json")
    summary = run_search(
        load_supernet(run_dir / "supernet"),
        predictor,
        rcfg,
        run_dir / "search",
        resume=True,
        progress=True,
        supernet_path=run_dir / "supernet",
        # the latency check times the chosen net on the target (and the report's measured
        # latency comes from the bench stage, on the same target)
        device=_device(cfg) if rcfg.latency_rounds > 0 else None,
        export_options=predictor.export_spec,
    )
    return {
        k: summary[k]
        for k in ("predicted_latency_ms", "psnr", "ssim", "search_wall_s", "candidates_scored",
                  "latency_check")
    }


def baseline_steps(cfg: PipelineConfig) -> int:
    """Steps of every model the baseline stage trains: as many optimiser steps (and images)
    as the delivered searched model had, supernet and fine-tune together."""
    return cfg.supernet_steps + cfg.train_steps


def _train_baselines(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.comparison.compare import (
        SCRATCH,
        TrainJob,
        check_presets,
        ecb_init_for,
        train_models,
        with_ecb_init,
    )
    from srsearch.models import preset_config, preset_lr
    from srsearch.models.subnet import subnet_config
    from srsearch.search.run import RunConfig
    from supernet.space import ArchConfig

    check_presets(cfg.baselines)
    steps = baseline_steps(cfg)
    ecb_init = ecb_init_for(cfg.train_rep)  # ECB blocks start alike in every row
    jobs = {n: TrainJob(with_ecb_init(preset_config(n, cfg.scale), ecb_init),
                        cfg.train_config(steps, lr=preset_lr(n)))
            for n in cfg.baselines}
    scaled, found = None, None
    if cfg.scaled_baseline:
        found = _scaled(cfg, run_dir)
        if found is not None:
            scaled = found["name"]
            how = ("with its PReLUs" if found["priced_as"] == "prelu" else
                   "as its ReLU twin: the table has no PReLU entries, so it may run over")
            if found.get("chosen_by") == "measured":
                how = (f"measured {found['measured_ms']:.2f} ms"
                       + (f" at the table's speed (the target ran {found['speed']:.3f}x)"
                          if found.get("speed", 1.0) != 1.0 else "")
                       + ", the slowest timed under it")
            _log(f"the ECBSR-style net scaled to {cfg.budget_ms:g} ms: {scaled} (predicted "
                 f"{found['predicted_ms']:.2f} ms, {how})")
            jobs.setdefault(scaled, TrainJob(with_ecb_init(found["config"], ecb_init),
                                             cfg.train_config(steps, lr=found["lr"])))
    if cfg.from_scratch:
        summary = json.loads((run_dir / "search" / "summary.json").read_text())
        arch = ArchConfig.from_dict(summary["pruned_arch"])
        jobs[SCRATCH] = TrainJob(subnet_config(arch, cfg.train_rep),
                                 cfg.train_config(steps, lr=RunConfig.lr))
    trained = train_models(jobs, run_dir / "baselines", _log)
    return {"steps": steps, "scaled": scaled, "models": trained,
            "scaled_by": found.get("chosen_by", "table") if scaled else None}


def _scaled(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any] | None:
    """The ECBSR-style net scaled to the budget (`scaled_ecbsr`), timed on the pipeline's
    target among the table's nearest; kept in ``baselines/scaled.json`` so that a resumed
    stage trains the same net."""
    from srsearch.comparison.fairness import timed_scaled_ecbsr
    from srsearch.latency import LatencyModel
    from srsearch.search.run import run_anchors

    path = run_dir / "baselines" / "scaled.json"
    saved = atomic.read_json(path)
    if saved is not None:
        return saved["scaled"]
    predictor = LatencyModel.load(run_dir / "latency" / "lut.json")
    # beside the search's anchors: judged at the table's speed, as the searched net was
    found, timing = timed_scaled_ecbsr(predictor, _space(cfg), cfg.budget_ms, _device(cfg),
                                       tuple(predictor.lr_hw), run_dir / "baselines" / "scaled",
                                       predictor.export_spec, run_anchors(run_dir / "search"),
                                       _log)
    atomic.write_json(path, {"budget_ms": cfg.budget_ms, "scaled": found, **timing})
    return found


def _models(cfg: PipelineConfig, run_dir: Path) -> dict[str, Path]:
    """Every trained model of the run: the searched one first, then the baselines, the
    scaled one and the from-scratch one (as the baseline stage trained them)."""
    models = {}
    if (run_dir / "search" / "model.pt").is_file():
        models["searched"] = run_dir / "search" / "model.pt"
    done = StageLog.load(run_dir).done.get("baselines") or {}
    names = list(done["models"]) if "models" in done else list(cfg.baselines)
    for name in names:
        models[name] = run_dir / "baselines" / name / "model.pt"
    return models


def _export(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.comparison.compare import export_models
    from srsearch.deploy.export import parse_size
    from srsearch.latency import lr_size

    files, failed = export_models(_models(cfg, run_dir), lr_size(parse_size(cfg.out_size),
                                  cfg.scale), run_dir / "export", cfg.data, _log,
                                  precision=cfg.deploy_precision)
    return {"files": {k: str(v) for k, v in files.items()}, "failed": failed}


def _log(message: str) -> None:
    print(f"[pipeline] {message}", flush=True)


def _bench(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    """Every exported file timed in one interleaved session beside the search's final anchors
    (`srsearch.search.run.run_anchors`), so each row's time is read at the latency table's
    speed too (``table_speed_ms``, round by round: `at_table_speed`): on a host whose speed
    moves by a quarter within minutes, the budget the search met is judged at the table's
    speed, and a reading as is can look over it (session 14: 38.27 ms for a net that read
    29.48 at the table's speed)."""
    from srsearch.latency import LatencyModel
    from srsearch.search.run import at_table_speed, run_anchors, speed_words, time_beside_anchors

    device = _device(cfg)
    files = StageLog.load(run_dir).done["export"]["files"]
    predictor = LatencyModel.load(run_dir / "latency" / "lut.json")
    anchors = run_anchors(run_dir / "search")
    results, timed = time_beside_anchors([Path(p) for p in files.values()], device, anchors,
                                         predictor, tuple(predictor.lr_hw),
                                         run_dir / "bench" / "anchors", predictor.export_spec,
                                         runs=cfg.bench_runs)
    speed = timed["speed"]
    table = {name: {**r.to_dict(), "table_speed_ms": at_table_speed(r, timed)}
             for name, r in zip(files, results, strict=True)}
    at = (f" (the target ran {speed_words(timed)} its latency table beside {len(anchors)} "
          "anchors)" if speed != 1.0 else "")
    _log(f"timed on {cfg.target}{at}")
    for name, r in table.items():
        both = (f", {r['table_speed_ms']:.2f} ms at the table's speed" if speed != 1.0 else "")
        _log(f"{name:<14} {r['median_ms']:.2f} ms median{both}")
    return {"fingerprint": device.fingerprint(), "models": table, **timed}


def _evaluate(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.comparison.compare import count_macs, inference_models
    from srsearch.data.datasets import load_images
    from srsearch.deploy.export import parse_size
    from srsearch.evaluation.evaluate import evaluate_models
    from srsearch.latency import lr_size

    sets = [(f"{cfg.data}:val", load_images(cfg.data, cfg.scale, "val"))]
    sets += [(spec, load_images(spec, cfg.scale, "all")) for spec in cfg.eval_data]
    models = inference_models(_models(cfg, run_dir), cfg.scale)
    lr_hw = lr_size(parse_size(cfg.out_size), cfg.scale)
    size = {name: {"params": sum(p.numel() for p in m.parameters()),
                   "gmacs": count_macs(m, lr_hw) / 1e9} for name, m in models.items()}

    def show(set_name: str, name: str, mean: dict[str, Any]) -> None:
        print(f"[pipeline] {name:<14} on {set_name}: {mean['psnr']:.3f} dB "
              f"(bicubic {mean['psnr_bicubic']:.3f})", flush=True)

    table = evaluate_models(models, sets, cfg.scale, run_dir / "eval", show)
    for rows in table.values():
        for name, row in rows.items():
            row.update(size[name])
    return table
