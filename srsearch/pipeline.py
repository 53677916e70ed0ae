"""``srsearch pipeline``: the main job, as a list of stages over one run directory.

Each stage writes its outputs into ``runs/<timestamp>/<stage>/`` and is marked done in
``stages.json`` only when it finishes; rerunning on the same run directory skips finished stages
and resumes an interrupted one (training stages resume from their last checkpoint).

Stages today: train the hand-designed baselines, evaluate them, write ``report.md``. The supernet,
latency-table, search, export and benchmark stages slot in ahead of the report as they land.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from srsearch.errors import UserError


@dataclass(frozen=True)
class PipelineConfig:
    """The main job's settings; ``--config FILE`` (TOML) overrides any of them by name."""

    data: str = "builtin"  # training data spec
    eval_data: tuple[str, ...] = ()  # extra evaluation sets (specs); the val split is always used
    scale: int = 2
    baselines: tuple[str, ...] = ("espcn", "ecbsr-m4c16")  # presets trained for comparison
    train_steps: int = 2000  # optimiser steps per trained model
    batch_size: int = 16
    lr_patch: int = 48
    target: str = "host"  # latency target: host or adb:SERIAL
    threads: int = 2
    budget_ms: float = 30.0
    out_size: str = "1280x720"
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise UserError(f"pipeline config: scale {self.scale} must be 2, 3 or 4")
        if self.train_steps < 1:
            raise UserError(f"pipeline config: train_steps {self.train_steps} must be >= 1")

    @classmethod
    def from_toml(cls, path: Path) -> PipelineConfig:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--config {path}: no such file")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"--config {path}: not valid TOML ({exc})") from exc
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"--config {path}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=2, default=str))
        tmp.replace(self.path)


def _train_baselines(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.models import preset_config
    from srsearch.training import TrainConfig, train

    results = {}
    for name in cfg.baselines:
        out = run_dir / "baselines" / name
        if (out / "model.pt").is_file():
            results[name] = json.loads((out / "metrics.json").read_text())
            continue
        tcfg = TrainConfig(data=cfg.data, scale=cfg.scale, max_steps=cfg.train_steps,
                           batch_size=cfg.batch_size, lr_patch=cfg.lr_patch,
                           val_every=max(1, cfg.train_steps // 4), ckpt_every=100,
                           seed=cfg.seed, accelerator=cfg.accelerator, devices=cfg.devices,
                           strategy=cfg.strategy, precision=cfg.precision)
        print(f"[pipeline] training {name} for {cfg.train_steps} steps -> {out}", flush=True)
        results[name] = train(preset_config(name, cfg.scale), tcfg, out, resume=True)
    return results


def _evaluate(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.datasets import load_images
    from srsearch.evaluate import evaluate, write_json
    from srsearch.modelio import load_model_file
    from srsearch.models import build_model, inference_form, preset_config

    sets = [(f"{cfg.data}:val", load_images(cfg.data, cfg.scale, "val"))]
    sets += [(spec, load_images(spec, cfg.scale, "all")) for spec in cfg.eval_data]
    models = {"bicubic": build_model(preset_config("bicubic", cfg.scale))}
    for name in cfg.baselines:
        models[name], _ = load_model_file(run_dir / "baselines" / name / "model.pt")
    table: dict[str, Any] = {}
    for set_name, images in sets:
        for name, model in models.items():
            res = evaluate(inference_form(model), images, cfg.scale)
            write_json(res, run_dir / "eval" / f"{name}__{_slug(set_name)}.json")
            table.setdefault(set_name, {})[name] = res["mean"]
            print(f"[pipeline] {name:<14} on {set_name}: {res['mean']['psnr']:.3f} dB "
                  f"(bicubic {res['mean']['psnr_bicubic']:.3f})", flush=True)
    return table


def _report(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = StageLog.load(run_dir)
    table = log.done["evaluate"]
    lines = [f"# srsearch report: {run_dir.name}", "",
             f"Data `{cfg.data}`, x{cfg.scale}, {cfg.train_steps} training steps per model.", ""]
    for set_name, rows in table.items():
        lines += [f"## {set_name} (Y-PSNR / SSIM, shave {cfg.scale})", "",
                  "| model | PSNR (dB) | SSIM |", "|---|---:|---:|"]
        lines += [f"| {m} | {r['psnr']:.3f} | {r['ssim']:.4f} |" for m, r in rows.items()]
        lines.append("")
    set_name, rows = next(iter(table.items()))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(rows), [r["psnr"] for r in rows.values()], color="tab:blue")
    ax.set_ylabel("Y-PSNR (dB)")
    ax.set_ylim(min(r["psnr"] for r in rows.values()) - 1, None)
    ax.set_title(f"{set_name}, x{cfg.scale}")
    fig.tight_layout()
    fig.savefig(run_dir / "psnr.png", dpi=120)
    plt.close(fig)
    lines += ["![PSNR](psnr.png)", "", "Config:", "", "```json",
              json.dumps(asdict(cfg), indent=2), "```", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return {"report": str(run_dir / "report.md")}


STAGES: tuple[Stage, ...] = (
    Stage("baselines", _train_baselines, "train the hand-designed baselines"),
    Stage("evaluate", _evaluate, "PSNR/SSIM of every model, bicubic alongside"),
    Stage("report", _report, "write report.md and plots"),
)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def run_pipeline(cfg: PipelineConfig, run_dir: Path) -> Path:
    """Run every unfinished stage in order; returns the report path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(
            json.dumps(asdict(cfg))):
        raise UserError(f"--run-dir {run_dir} was started with another config ({cfg_path}); "
                        "use a new run directory or the same config")
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2))
    log = StageLog.load(run_dir)
    for i, stage in enumerate(STAGES, 1):
        head = f"[pipeline] stage {i}/{len(STAGES)} {stage.name}: {stage.description}"
        if stage.name in log.done:
            print(f"{head} (done, skipped)", flush=True)
            continue
        print(head, flush=True)
        t0 = time.perf_counter()
        result = stage.run(cfg, run_dir)
        print(f"[pipeline] stage {stage.name} finished in {time.perf_counter() - t0:.0f} s",
              flush=True)
        log.mark(stage.name, result)
    return run_dir / "report.md"
