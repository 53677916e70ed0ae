"""``srsearch compare``: the searched model against the hand-designed baselines, side by side.

For one search run directory (``srsearch search --out RUN_DIR``) this trains every baseline
with the run's fine-tuning settings (same training data, steps, batch, patch and seed; each
preset's own learning rate), exports every model to LiteRT at the run's input size, measures
all of them on one target, evaluates them on the given data and writes one table:

| file | what |
|---|---|
| ``RUN_DIR/compare/<name>/`` | each baseline's training run (checkpoints, ``model.pt``) |
| ``RUN_DIR/compare/export/<name>.tflite`` | the files that were timed |
| ``RUN_DIR/compare/eval/<name>__<data>.json`` | per-image PSNR/SSIM |
| ``RUN_DIR/compare/compare.json`` | everything below, machine-readable |
| ``RUN_DIR/compare/compare.md``, ``compare.csv`` | the side-by-side table |
| ``RUN_DIR/compare/compare.png`` | PSNR against measured latency |
| ``RUN_DIR/compare/crops.png`` | crops: HR, bicubic, best baseline within budget, searched |

Every step is skipped when its output exists, so a killed compare resumes (a baseline's
training resumes from its last checkpoint). Latencies are measured again on every call, all
models in one session, so they are comparable with each other.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srsearch import atomic
from srsearch.errors import UserError

# ESPCN, FSRCNN (and its small form) and the ECBSR-style plain family at four sizes.
DEFAULT_BASELINES: tuple[str, ...] = (
    "espcn",
    "fsrcnn",
    "fsrcnn-s",
    "ecbsr-m4c8",
    "ecbsr-m4c16",
    "ecbsr-m8c16",
    "ecbsr-m4c32",
)
SEARCHED = "searched"


@dataclass(frozen=True)
class RunSettings:
    """What ``compare`` reads from a search run directory."""

    run_dir: Path
    search: Any  # the run's `srsearch.search.run.RunConfig`: data, fine-tune steps, seed, ...
    scale: int
    lr_hw: tuple[int, int]
    target_id: str | None
    target: dict[str, Any] | None
    precision: str = "fp32"  # what the latency table timed, so what is exported and timed

    @classmethod
    def load(cls, run_dir: Path) -> RunSettings:
        from srsearch.search.run import RunConfig

        run_dir = Path(run_dir)
        cfg_path, summary_path = run_dir / "config.json", run_dir / "summary.json"
        if not (run_dir / "model.pt").is_file() or not summary_path.is_file():
            raise UserError(
                f"--run {run_dir}: not a finished search run (no model.pt and summary.json); "
                "give the --out of a `srsearch search` that finished, or resume it with "
                "`srsearch search ... --resume`"
            )
        cfg = json.loads(cfg_path.read_text())
        summary = json.loads(summary_path.read_text())
        return cls(
            run_dir=run_dir,
            search=RunConfig.from_dict(cfg),
            scale=int(summary["arch"]["scale"]),
            lr_hw=tuple(summary["lr_hw"]),
            target_id=summary.get("target"),
            target=cfg.get("target_spec"),
            precision=(cfg.get("export_spec") or {}).get("precision", "fp32"),
        )


def train_baselines(
    names: Sequence[str],
    scale: int,
    out_dir: Path,
    make_cfg: Callable[[float], Any],
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Train each preset in ``names`` into ``out_dir/<name>``; a finished one is skipped and
    an interrupted one resumes. ``make_cfg(lr)`` gives the `TrainConfig` at a preset's rate."""
    from srsearch.models import preset_config, preset_lr, presets
    from srsearch.training import train

    unknown = [n for n in names if n not in presets() or n == "bicubic"]
    if unknown:
        raise UserError(
            f"--baselines: unknown {unknown}; trainable presets: "
            f"{', '.join(p for p in presets() if p != 'bicubic')}"
        )
    results = {}
    for i, name in enumerate(names, 1):
        out = Path(out_dir) / name
        if (out / "model.pt").is_file() and (out / "metrics.json").is_file():
            results[name] = json.loads((out / "metrics.json").read_text())
            log(f"baseline {i}/{len(names)} {name}: trained (skipped)")
            continue
        cfg = make_cfg(preset_lr(name))
        log(f"baseline {i}/{len(names)} {name}: training {cfg.max_steps} steps -> {out}")
        results[name] = train(preset_config(name, scale), cfg, out, resume=True)
    return results


def count_macs(model: nn.Module, lr_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass at LR ``lr_hw`` (convolutions and linear
    layers, counted with forward hooks on a zero input; activations and adds are free). The
    fixed 1x1-conv global skip (`LRSkip`) counts as the conv it runs as."""
    from srsearch.layers import LRSkip

    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * k
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += inputs[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features
        elif isinstance(mod, LRSkip):
            total += out.numel() * inputs[0].shape[1]

    types = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, LRSkip)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *lr_hw))
    finally:
        for h in handles:
            h.remove()
    return total


def inference_models(paths: Mapping[str, Path], scale: int) -> dict[str, nn.Module]:
    """Bicubic, then each ``model.pt`` in the form that is exported and timed (ECBSR and FSRCNN
    collapsed), in eval mode."""
    from srsearch.modelio import load_model_file
    from srsearch.models import build_model, inference_form, preset_config

    models = {"bicubic": build_model(preset_config("bicubic", scale))}
    for name, path in paths.items():
        models[name] = inference_form(load_model_file(path)[0]).eval()
    return models


def export_models(
    models: Mapping[str, Path],
    lr_hw: tuple[int, int],
    out_dir: Path,
    data: str,
    log: Callable[[str], None] = print,
    precision: str = "fp32",
) -> tuple[dict[str, Path], dict[str, str]]:
    """LiteRT export (checked against PyTorch; int8 calibrated on ``data``'s train split) of
    each ``model.pt``; returns the files and, for models the converter cannot take, the reason
    (they are left out, not fatal)."""
    from srsearch.export import export_tflite
    from srsearch.modelio import load_model_file

    files, failed = {}, {}
    for name, path in models.items():
        out = Path(out_dir) / f"{name}.tflite"
        if not out.is_file():
            model, _ = load_model_file(path)
            try:
                export_tflite(
                    model,
                    out,
                    input_size=(lr_hw[1], lr_hw[0]),
                    data=data,
                    precision=precision,
                    source=str(path),
                    allow_cpu_ops=True,
                    log=log,
                )
            except Exception as exc:  # noqa: BLE001 - a model the converter cannot take
                if name == SEARCHED:
                    raise
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log(f"{name}: not exported, left out of the timing ({failed[name]})")
                continue
        files[name] = out
    return files, failed


def compare_run(
    run_dir: Path,
    eval_data: Sequence[str] = (),
    *,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    target: str | None = None,
    threads: int | None = None,
    steps: int | None = None,
    bench_runs: int = 20,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, export, measure and evaluate; write the table (see the module docstring)."""
    from android_bench import device_from_target
    from srsearch.datasets import load_images
    from srsearch.evaluate import evaluate_models

    run = RunSettings.load(run_dir)
    out = Path(out or run.run_dir / "compare")
    out.mkdir(parents=True, exist_ok=True)
    steps = steps or run.search.finetune_steps
    if steps < 1:
        raise UserError(
            f"--run {run_dir} was not fine-tuned (finetune_steps 0): give --steps N to train "
            "the baselines for N steps"
        )

    def make_cfg(lr: float) -> Any:
        return run.search.train_config(run.scale, steps, lr)

    trained = train_baselines(baselines, run.scale, out, make_cfg, lambda m: log(f"[compare] {m}"))
    paths = {SEARCHED: run.run_dir / "model.pt"} | {n: out / n / "model.pt" for n in baselines}

    # --- measure: every model in one session on one device ---
    spec = target or (run.target or {}).get("target") or "host"
    opts = dict((run.target or {}).get("options") or {}) if target is None else {}
    if threads is not None:
        opts["threads"] = threads
    device = device_from_target(spec, **opts)
    if run.target_id and device.fingerprint_id() != run.target_id:
        log(
            f"[compare] note: measuring on {device.fingerprint_id()}, the run's latency table "
            f"was built on {run.target_id}"
        )
    files, failed = export_models(
        paths,
        run.lr_hw,
        out / "export",
        run.search.data,
        lambda m: log(f"[compare] {m}"),
        precision=run.precision,
    )
    log(
        f"[compare] timing {len(files)} models on {device.fingerprint_id()}, {bench_runs} runs each"
    )
    results = device.benchmark(list(files.values()), runs=bench_runs)
    latency = {name: r.median_ms for name, r in zip(files, results, strict=True)}

    # --- evaluate ---
    sets = [
        (s, load_images(s, run.scale, "val" if s == run.search.data else "all"))
        for s in (eval_data or [run.search.data])
    ]
    models = inference_models(paths, run.scale)
    table = evaluate_models(models, sets, run.scale, out / "eval")
    rows: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        nparams = sum(p.numel() for p in model.parameters())
        rows[name] = {
            "latency_ms": latency.get(name),
            "params": nparams,
            "macs": count_macs(model, run.lr_hw) if nparams else 0,
            "export_failed": failed.get(name),
            "trained_steps": trained[name]["steps"] if name in trained else None,
            "psnr": {s: table[s][name]["psnr"] for s, _ in sets},
            "ssim": {s: table[s][name]["ssim"] for s, _ in sets},
        }
        first = sets[0][0]
        log(
            f"[compare] {name:<12} {rows[name]['psnr'][first]:.3f} dB on {first}"
            + (f", {latency[name]:.2f} ms" if name in latency else "")
        )
    from srsearch.grid import report_grid

    first = sets[0][0]
    crops = report_grid(sets[0][1], models, {n: r["psnr"][first] for n, r in rows.items()},
                        latency, run.search.budget_ms, run.scale, out / "crops.png")
    result = {
        "run": str(run.run_dir),
        "data": run.search.data,
        "scale": run.scale,
        "steps": steps,
        "budget_ms": run.search.budget_ms,
        "lr_hw": list(run.lr_hw),
        "device": device.fingerprint_id(),
        "precision": run.precision,
        "fingerprint": device.fingerprint(),
        "eval_sets": [s for s, _ in sets],
        "models": rows,
        "margins": margins(rows, [s for s, _ in sets], run.search.budget_ms),
        "crops": crops,
    }
    atomic.write_json(out / "compare.json", result)
    write_tables(result, out)
    plot(result, out / "compare.png")
    return result


def margins(
    rows: Mapping[str, Mapping[str, Any]], sets: Sequence[str], budget_ms: float
) -> dict[str, Any]:
    """Per eval set: the searched model's PSNR minus the best baseline's among those measured
    at or under the budget (None when no baseline is that fast)."""
    fast = [
        n
        for n, r in rows.items()
        if n not in (SEARCHED, "bicubic")
        and r["latency_ms"] is not None
        and r["latency_ms"] <= budget_ms
    ]
    out = {}
    for s in sets:
        if not fast:
            out[s] = {"best_baseline": None, "margin_db": None}
            continue
        best = max(fast, key=lambda n: rows[n]["psnr"][s])
        out[s] = {
            "best_baseline": best,
            "margin_db": rows[SEARCHED]["psnr"][s] - rows[best]["psnr"][s],
        }
    return out


def write_tables(result: Mapping[str, Any], out: Path) -> None:
    sets = result["eval_sets"]
    head = ["model", "latency_ms", "params", "gmacs"]
    head += [f"{k}:{s}" for s in sets for k in ("psnr", "ssim")]
    body = []
    for name, r in result["models"].items():
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
        if r["export_failed"] and r["latency_ms"] is None:
            lat = "not convertible"
        body.append(
            [name, lat, str(r["params"]), f"{r['macs'] / 1e9:.2f}"]
            + [f"{r[k][s]:.{3 if k == 'psnr' else 4}f}" for s in sets for k in ("psnr", "ssim")]
        )
    with (out / "compare.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(body)
    h, w_ = result["lr_hw"]
    lines = [
        f"# srsearch compare: {result['run']}",
        "",
        f"x{result['scale']}, LR input {w_}x{h}; baselines trained on `{result['data']}` for "
        f"{result['steps']} steps (the searched model's fine-tuning); latency: median on "
        f"{result['device']}, {result['precision']} files; Y-PSNR (dB) / SSIM of the PyTorch "
        "models, shave = scale.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines.append("")
    for s, m in result["margins"].items():
        if m["best_baseline"] is None:
            lines.append(f"- {s}: no baseline measured at or under {result['budget_ms']:g} ms.")
        else:
            lines.append(
                f"- {s}: searched minus the best baseline at or under "
                f"{result['budget_ms']:g} ms ({m['best_baseline']}): "
                f"{m['margin_db']:+.3f} dB."
            )
    lines.append("")
    lines += result.get("crops", {}).get("markdown", [])
    atomic.write_text(out / "compare.md", "\n".join(lines))


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["eval_sets"][0]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in result["models"].items():
        if r["latency_ms"] is None:
            continue
        searched = name == SEARCHED
        ax.scatter(
            r["latency_ms"],
            r["psnr"][s],
            marker="*" if searched else "s",
            s=150 if searched else 40,
            c="tab:red" if searched else "tab:blue",
            zorder=3,
        )
        ax.annotate(
            name,
            (r["latency_ms"], r["psnr"][s]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.axhline(result["models"]["bicubic"]["psnr"][s], c="0.5", ls=":", lw=1, label="bicubic")
    ax.axvline(
        result["budget_ms"], c="tab:red", ls="--", lw=1, label=f"budget {result['budget_ms']:g} ms"
    )
    ax.set_xlabel(f"measured latency (ms), {result['device']}")
    ax.set_ylabel(f"Y-PSNR on {s} (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
