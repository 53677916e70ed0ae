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
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from srsearch import atomic
from srsearch.errors import UserError
from srsearch.settings import build_config


def _doc(default: Any, help: str) -> Any:
    """A field with its help text in ``metadata["help"]``: `srsearch pipeline` makes one flag
    per field from it (`srsearch.commands.pipeline`)."""
    return field(default=default, metadata={"help": help})


CONTEXT = "pipeline config"
# RunConfig field -> PipelineConfig field, where the names differ.
RUN_FIELDS = {"trials": "search_trials", "finetune_steps": "train_steps"}
SUPERNET_LR_PATCH = 32  # LR patch side of supernet training (as `srsearch supernet`'s default)


@dataclass(frozen=True)
class PipelineConfig:
    """The main job's settings: each field is a `srsearch pipeline` flag (``budget_ms`` is
    ``--budget-ms``) and a key of a ``--config FILE`` (TOML); flags override the file."""

    data: str = _doc("builtin", "training data: 'builtin', a folder of HR images or div2k:ROOT")
    eval_data: tuple[str, ...] = _doc(
        (), "extra evaluation sets (data specs); the val split of --data is always used"
    )
    scale: int = _doc(2, "upscaling factor: 2, 3 or 4")
    # The fixed presets nearest the default 30 ms budget on a 2-core host (ESPCN and FSRCNN-s
    # measured 60-80 ms there); the baseline stage adds the ECBSR-style net scaled to the
    # budget and the searched architecture trained from scratch. `srsearch compare` trains the
    # full set. FSRCNN exports through its exact sub-pixel form.
    baselines: tuple[str, ...] = _doc(
        ("ecbsr-m4c8", "ecbsr-m4c16"),
        "fixed hand-designed presets, each trained for supernet + fine-tune steps",
    )
    train_steps: int = _doc(1000, "fine-tune steps of the searched model")
    scaled_baseline: bool = _doc(
        True, "also train the ECBSR-style net the latency model puts closest under the budget"
    )
    from_scratch: bool = _doc(
        True, "also train the searched architecture from random init with the baselines' recipe"
    )
    batch_size: int = _doc(16, "training batch size")
    lr_patch: int = _doc(48, "LR training patch side (px)")
    supernet_steps: int = _doc(1000, "stage 1: supernet training steps")
    max_width: int = _doc(32, "search space: widest layer (multiple of 4)")
    max_depth: int = _doc(8, "search space: most cells")
    search_trials: int = _doc(100, "stage 2: architecture candidates")
    stage3_trials: int = _doc(20, "stage 3: pruning-ratio candidates")
    latency_runs: int = _doc(10, "benchmark runs per latency-table entry")
    latency_nets: int = _doc(20, "whole nets measured to fit the latency model's net term")
    validate_nets: int = _doc(10, "whole nets measured to validate the latency model (0: skip)")
    target: str = _doc("host", "latency target: host or adb:SERIAL")
    threads: int = _doc(2, "CPU threads on the target")
    benchmark_binary: str | None = _doc(None, "benchmark_model path on this machine, for adb")
    budget_ms: float = _doc(30.0, "latency budget (ms) at --out-size on the target")
    budget_floor: float = _doc(0.85, "search only nets predicted at >= this x budget (0: off)")
    overshoot: float = _doc(
        0.0, "stage 2 searches under (1 + this) x budget, stage 3 prunes back into it"
    )
    deploy_precision: str = _doc(
        "fp32", "fp32 or int8: what the latency table times and export ships"
    )
    out_size: str = _doc("1280x720", "output (HR) frame size WxH the latency is measured at")
    bench_runs: int = _doc(20, "runs per model in the final benchmark")
    accelerator: str = _doc("cpu", "Lightning accelerator: cpu, gpu, auto, ...")
    devices: int | str = _doc(1, "Lightning devices: a number, a list or 'auto'")
    strategy: str = _doc("auto", "Lightning strategy: auto, ddp, ...")
    precision: str = _doc("32-true", "Lightning training precision: 32-true, bf16-mixed, ...")
    seed: int = _doc(0, "random seed of training and search")

    def __post_init__(self) -> None:
        # Each value is checked by the config that owns it (RunConfig: budget, floor,
        # overshoot, trials; TrainConfig: scale, steps, batch, patch), built here so that a bad
        # value is refused before hours of training; errors name this config's keys.
        self.run_config()
        self.train_config(self.train_steps, steps_key="train_steps")
        self.train_config(self.supernet_steps, steps_key="supernet_steps",
                          lr_patch=SUPERNET_LR_PATCH)
        from srsearch.latency.build import PRECISIONS

        if self.deploy_precision not in PRECISIONS:
            raise UserError(f"pipeline config: deploy_precision {self.deploy_precision!r} must "
                            f"be {' or '.join(PRECISIONS)}")

    def run_config(self):
        """The search's `srsearch.search.run.RunConfig` (its other fields at their defaults)."""
        from srsearch.search.run import RunConfig

        return build_config(RunConfig, asdict(self), rename=RUN_FIELDS, context=CONTEXT)

    def train_config(self, steps: int, *, steps_key: str = "train_steps",
                     lr_patch: int | None = None, lr: float = 1e-3):
        """The `srsearch.training.TrainConfig` of a ``steps``-step training of this run
        (``steps_key``: the key that set ``steps``, named in errors)."""
        from srsearch.training import TrainConfig

        return build_config(TrainConfig, asdict(self), rename={"max_steps": steps_key},
                            context=CONTEXT, max_steps=steps, lr_patch=lr_patch or self.lr_patch,
                            lr=lr, val_every=max(1, steps // 4),
                            ckpt_every=max(1, min(100, steps)))

    @classmethod
    def from_toml(
        cls, path: Path | None, overrides: dict[str, Any] | None = None
    ) -> PipelineConfig:
        """The settings of TOML file ``path`` (None: the defaults), with ``overrides`` (field
        name -> value, e.g. from flags) taking precedence."""
        raw: dict[str, Any] = {}
        if path is not None:
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
        raw |= overrides or {}
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
        atomic.write_json(self.path, self.done)


def _space(cfg: PipelineConfig):
    from supernet.space import make_space

    return make_space(cfg.scale, cfg.max_width, cfg.max_depth)


def _device(cfg: PipelineConfig):
    from android_bench import device_from_target

    opts = {"threads": cfg.threads}
    if cfg.target.startswith("adb"):
        opts["benchmark_binary"] = cfg.benchmark_binary
    return device_from_target(cfg.target, **opts)


def _supernet(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.supernet_training import train_supernet

    return train_supernet(
        _space(cfg),
        cfg.train_config(cfg.supernet_steps, steps_key="supernet_steps",
                         lr_patch=SUPERNET_LR_PATCH),
        run_dir / "supernet",
        resume=True,
    )


def _latency(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from rich.console import Console

    from srsearch._imageio import default_cache_dir
    from srsearch.export import parse_size
    from srsearch.latency import LatencyModel, build_table, validate, validation_path
    from srsearch.latency.runner import default_jobs, probe_cache_dir
    from srsearch.progress import ProgressBars

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
    from srsearch.supernet_training import load_supernet

    rcfg = cfg.run_config()
    summary = run_search(
        load_supernet(run_dir / "supernet"),
        LatencyModel.load(run_dir / "latency" / "lut.json"),
        rcfg,
        run_dir / "search",
        resume=True,
        progress=True,
        supernet_path=run_dir / "supernet",
    )
    return {
        k: summary[k]
        for k in ("predicted_latency_ms", "psnr", "ssim", "search_wall_s", "candidates_scored")
    }


def baseline_steps(cfg: PipelineConfig) -> int:
    """Steps of every model the baseline stage trains: as many optimiser steps (and images)
    as the delivered searched model had, supernet and fine-tune together."""
    return cfg.supernet_steps + cfg.train_steps


def _train_baselines(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.compare import SCRATCH, TrainJob, check_presets, train_models
    from srsearch.fairness import scaled_ecbsr
    from srsearch.latency import LatencyModel
    from srsearch.models import preset_config, preset_lr
    from srsearch.models.subnet import subnet_config
    from srsearch.search.run import RunConfig
    from supernet.space import ArchConfig

    check_presets(cfg.baselines)
    steps = baseline_steps(cfg)
    jobs = {n: TrainJob(preset_config(n, cfg.scale), cfg.train_config(steps, lr=preset_lr(n)))
            for n in cfg.baselines}
    scaled = None
    if cfg.scaled_baseline:
        found = scaled_ecbsr(LatencyModel.load(run_dir / "latency" / "lut.json"), _space(cfg),
                             cfg.budget_ms)
        if found is not None:
            scaled = found["name"]
            _log(f"the ECBSR-style net scaled to {cfg.budget_ms:g} ms: {scaled} (predicted "
                 f"{found['predicted_ms']:.2f} ms)")
            jobs.setdefault(scaled, TrainJob(found["config"], cfg.train_config(
                steps, lr=preset_lr("ecbsr-m4c8"))))
    if cfg.from_scratch:
        summary = json.loads((run_dir / "search" / "summary.json").read_text())
        arch = ArchConfig.from_dict(summary["pruned_arch"])
        jobs[SCRATCH] = TrainJob(subnet_config(arch), cfg.train_config(steps, lr=RunConfig.lr))
    trained = train_models(jobs, run_dir / "baselines", _log)
    return {"steps": steps, "scaled": scaled, "models": trained}


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


def _compute_rows(cfg: PipelineConfig, run_dir: Path, names: list[str]) -> dict[str, Any]:
    """Training compute of each trained model (`srsearch.fairness`); the searched model's
    includes its supernet's share."""
    from srsearch.fairness import add_compute, supernet_compute, training_compute
    from srsearch.modelio import load_model_file

    rows: dict[str, Any] = {}
    for name, path in _models(cfg, run_dir).items():
        if name not in names or not path.is_file():
            continue
        model_cfg = json.loads((path.parent / "train_config.json").read_text())["model"] \
            if name != "searched" else load_model_file(path)[0].config()
        steps = cfg.train_steps if name == "searched" else baseline_steps(cfg)
        c = training_compute(model_cfg, steps, cfg.batch_size, cfg.lr_patch)
        if name == "searched":
            sn = supernet_compute(run_dir / "supernet")
            c = {**(add_compute(sn, c) if sn else c), "supernet_share": sn}
        rows[name] = c
    return rows


def _export(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.compare import export_models
    from srsearch.export import parse_size
    from srsearch.latency import lr_size

    files, failed = export_models(_models(cfg, run_dir), lr_size(parse_size(cfg.out_size),
                                  cfg.scale), run_dir / "export", cfg.data, _log,
                                  precision=cfg.deploy_precision)
    return {"files": {k: str(v) for k, v in files.items()}, "failed": failed}


def _log(message: str) -> None:
    print(f"[pipeline] {message}", flush=True)


def _bench(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    device = _device(cfg)
    files = StageLog.load(run_dir).done["export"]["files"]
    results = device.benchmark([Path(p) for p in files.values()], runs=cfg.bench_runs)
    table = {name: r.to_dict() for name, r in zip(files, results, strict=True)}
    for name, r in table.items():
        print(f"[pipeline] {name:<14} {r['median_ms']:.2f} ms median on {cfg.target}", flush=True)
    return {"fingerprint": device.fingerprint(), "models": table}


def _evaluate(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from srsearch.compare import count_macs, inference_models
    from srsearch.datasets import load_images
    from srsearch.evaluate import evaluate_models
    from srsearch.export import parse_size
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


def _report(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = StageLog.load(run_dir).done
    table, bench = done["evaluate"], done.get("bench", {}).get("models", {})
    lat = {name: r["median_ms"] for name, r in bench.items()}
    base = done.get("baselines") or {}
    compute = _compute_rows(cfg, run_dir, list(next(iter(table.values()))))
    sn = (compute.get("searched") or {}).get("supernet_share")
    lines = [
        f"# srsearch report: {run_dir.name}",
        "",
        f"Data `{cfg.data}`, x{cfg.scale}, target `{cfg.target}` ({cfg.threads} threads), "
        f"budget {cfg.budget_ms:g} ms at {cfg.out_size} output, seed {cfg.seed} (one seed per "
        "model: margins under about 0.3 dB are within the spread between seeds measured in "
        "docs/search.md; `srsearch compare --seeds N` gives them a spread). Training: the "
        f"searched model inherited the weights of a supernet trained {cfg.supernet_steps} "
        f"steps ({sn['subnets_per_step'] if sn else '?'} subnets per step) and was fine-tuned "
        f"{cfg.train_steps} steps; every other model trained "
        f"{base.get('steps', cfg.train_steps)} steps from random initialisation, so all had "
        "the same steps and images (columns below; training MACs = forward MACs of the "
        "training form at the patch size x batch x 3). "
        + (f"`{base['scaled']}` is the ECBSR-style net the latency model puts closest under "
           "the budget. " if base.get("scaled") else "")
        + ("`searched-scratch` is the searched architecture trained from scratch with the "
           "baselines' recipe. " if "searched-scratch" in compute else "")
        + "Params and GMACs are those of the exported (inference) form at the LR input; "
        "latency is the median on the target.",
        "",
    ]
    if "search" in done:
        s = done["search"]
        lines += [
            f"Search: {s['candidates_scored']} candidates scored in "
            f"{s['search_wall_s']:.0f} s; predicted latency "
            f"{s['predicted_latency_ms']:.2f} ms.",
            "",
        ]
    if "latency" in done and "mape_pct" in done["latency"]:
        v = done["latency"]
        lines += [
            f"Latency model: MAPE {v['mape_pct']:.1f} %, largest error "
            f"{v['max_error_pct']:+.1f} %, Spearman {v['spearman']:.3f} on "
            f"{cfg.validate_nets} nets measured end to end.",
            "",
        ]
        warning = latency_warning(v["mape_pct"], cfg.validate_nets)
        if warning:
            lines += [f"**Warning:** {warning}", ""]
    for set_name, rows in table.items():
        lines += [
            f"## {set_name} (Y-PSNR / SSIM, shave {cfg.scale})",
            "",
            "| model | PSNR (dB) | SSIM | measured latency (ms) | params | GMACs | train steps "
            "| train patches | train TMACs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, r in rows.items():
            ms = f"{lat[m]:.2f}" if m in lat else "-"
            c = compute.get(m)
            steps = "-" if not c else f"{c['steps']}" + (
                f" ({c['supernet_share']['steps']} supernet)" if c.get("supernet_share") else "")
            cells = "- | - " if not c else f"{c['patches_seen']} | {c['train_macs'] / 1e12:.1f} "
            lines.append(f"| {m} | {r['psnr']:.3f} | {r['ssim']:.4f} | {ms} | {r['params']} | "
                         f"{r.get('gmacs', float('nan')):.2f} | {steps} | {cells}|")
        lines.append("")
    set_name, rows = next(iter(table.items()))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in rows.items():
        if name in lat:
            ax.scatter(lat[name], r["psnr"], color="tab:red" if name == "searched" else "tab:blue")
            ax.annotate(name, (lat[name], r["psnr"]), fontsize=8)
    ax.axvline(cfg.budget_ms, color="gray", linestyle="--", label="budget")
    ax.set_xlabel(f"measured latency on {cfg.target} (ms, {cfg.out_size})")
    ax.set_ylabel("Y-PSNR (dB)")
    ax.set_title(f"{set_name}, x{cfg.scale}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "psnr_latency.png", dpi=120)
    plt.close(fig)
    lines += ["![PSNR against measured latency](psnr_latency.png)", ""]
    lines += _crops(cfg, run_dir, next(iter(table.values())), lat)
    if (run_dir / "search" / "pareto.png").is_file():
        lines += ["![Search: PSNR against predicted latency](search/pareto.png)", ""]
    lines += ["Config:", "", "```json", json.dumps(asdict(cfg), indent=2), "```", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return {"report": str(run_dir / "report.md")}


def _crops(cfg: PipelineConfig, run_dir: Path, rows: dict[str, Any],
           lat: dict[str, float]) -> list[str]:
    """crops.png (`srsearch.grid`) of two validation images; the report's lines for it."""
    from srsearch.compare import inference_models
    from srsearch.datasets import load_images
    from srsearch.grid import report_grid

    models = inference_models(_models(cfg, run_dir), cfg.scale)
    # the from-scratch row is the searched architecture, not a baseline
    psnr = {name: r["psnr"] for name, r in rows.items() if name != "searched-scratch"}
    return report_grid(load_images(cfg.data, cfg.scale, "val"), models, psnr, lat,
                       cfg.budget_ms, cfg.scale, run_dir / "crops.png")["markdown"]


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
    from srsearch.rundir_lock import run_dir_lock

    with run_dir_lock(Path(run_dir), "--run-dir") as run_dir:
        return _run_pipeline(cfg, run_dir)


# Keys that only the search stage (and the report after it) reads: until that stage is done,
# a rerun may change them, so a budget the search refused can be retried in the same run dir.
_SEARCH_ONLY = ("budget_ms", "budget_floor", "overshoot", "search_trials", "stage3_trials")


def _run_pipeline(cfg: PipelineConfig, run_dir: Path) -> Path:
    cfg_path = run_dir / "config.json"
    want = json.loads(json.dumps(asdict(cfg)))
    have = atomic.read_json(cfg_path) or want  # none yet (or unreadable): this run starts it
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
