"""``srsearch compare``: the searched model against the hand-designed baselines, side by side,
with the same training for every model.

For one search run directory (``srsearch search --out RUN_DIR``) this trains every baseline
with the run's fine-tuning recipe (training data, batch, patch; each preset's own learning
rate) for as many optimiser steps and images as the delivered searched model had in total:
its supernet's steps plus its fine-tune's (inheriting supernet weights is training too). It
adds, when a latency model is given, the ECBSR-style net scaled to the budget (of the (blocks,
channels) the latency model puts nearest it, the slowest measured under it on the target;
`fairness.scaled_ecbsr`), and with ``from_scratch`` the searched
architecture trained from random initialisation with exactly the baselines' recipe. With
``seeds`` N every trained model is trained N times (seeds run.seed .. run.seed+N-1; the
delivered model's extra seeds re-fine-tune from the same inherited weights) and the table gives
mean +- std and each margin with its spread (`srsearch.comparison.fairness.margin_stats`).
Every model is exported to LiteRT at the run's input size, measured in one session on one
target, evaluated on the given data, and written into one table:

| file | what |
|---|---|
| ``RUN_DIR/compare/<name>[-seed<k>]/`` | each training run (checkpoints, ``model.pt``) |
| ``RUN_DIR/compare/export/<name>.tflite`` | the files that were timed |
| ``RUN_DIR/compare/eval/<name>__<data>.json`` | per-image PSNR/SSIM |
| ``RUN_DIR/compare/compare.json`` | everything below, machine-readable |
| ``RUN_DIR/compare/compare.md``, ``compare.csv`` | the side-by-side table |
| ``RUN_DIR/compare/compare.png`` | PSNR against measured latency |
| ``RUN_DIR/compare/crops.png`` | crops: HR, bicubic, best baseline within budget, searched |

Every step is skipped when its output exists, so a killed compare resumes (a training run
resumes from its last checkpoint). Latencies are measured again on every call, all models in
one session, so they are comparable with each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from srsearch.common import atomic
from srsearch.common.errors import UserError
from srsearch.comparison.compare_report import fair_margins, margins, plot, write_tables
from srsearch.comparison.fairness import (
    count_macs,
    delivered_compute,
    supernet_compute,
    training_compute,
)
from srsearch.comparison.run_settings import RunSettings
from srsearch.train.train_jobs import (
    TrainJob,
    check_presets,
    seed_name,
    train_baselines,
    train_models,
)

__all__ = ["DEFAULT_BASELINES", "SEARCHED", "SCRATCH", "RunSettings", "TrainJob", "compare_run",
           "count_macs", "export_models", "inference_models", "margins", "train_baselines",
           "train_models"]

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
SEARCHED = "searched"  # the delivered model: inherited supernet weights, pruned, fine-tuned
SCRATCH = "searched-scratch"  # the searched architecture trained from random initialisation


def inference_models(paths: Mapping[str, Path], scale: int) -> dict[str, nn.Module]:
    """Bicubic, then each ``model.pt`` in the form that is exported and timed (ECBSR and FSRCNN
    collapsed), in eval mode."""
    from srsearch.models import build_model, inference_form, preset_config
    from srsearch.models.modelio import load_model_file

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
    from srsearch.deploy.export import export_tflite
    from srsearch.models.modelio import load_model_file

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


def _inherited(run: RunSettings, supernet_path: Path) -> Callable[[], dict[str, Any]]:
    """The compact model's weights as the search handed them to its fine-tune: the supernet's
    subnet of ``arch.json``, pruned as ``prune.json`` says (those of the round the latency
    check accepted), in the run's training form (``train_rep``)."""

    def init() -> dict[str, Any]:
        from srsearch.search.pruning import PruneConfig, apply_pruning
        from srsearch.search.run import chosen_dir
        from srsearch.train.supernet_training import load_supernet
        from supernet.space import ArchConfig

        chosen = chosen_dir(run.run_dir)  # the latency check's accepted round
        arch = ArchConfig.from_json((chosen / "arch.json").read_text())
        prune = PruneConfig.from_json((chosen / "prune.json").read_text())
        subnet = load_supernet(supernet_path).get_active_subnet(arch).eval()
        from srsearch.models.subnet import training_form

        return training_form(apply_pruning(subnet, prune), run.search.train_rep).state_dict()

    return init


SCALED_FILE = "scaled.json"


def _on_target(spec: str, device: Any, run: RunSettings) -> bool:
    """This machine is the run's target: the host whose fingerprint is the table's (a phone
    target is not assumed attached to a training machine)."""
    return spec == "host" and run.target_id is not None and device.fingerprint_id() == run.target_id


def _scaled_baseline(predictor: Any, run: RunSettings, log: Callable[[str], None], out: Path,
                     device: Any = None):
    """The ECBSR-style row scaled to the run's budget (`scaled_ecbsr`), timed on ``device``
    when one is given; the pick is kept in ``out/scaled.json`` so that a resumed or
    train-only-then-score compare trains and reports the same net."""
    saved = _saved_pick(out, run)
    if saved is not None:
        return saved["scaled"]
    if device is None:
        return _pick_scaled(predictor, run, log, out, None)
    # one process times; another started beside it (`--train-only` shares) waits for its pick
    from srsearch.common.rundir_lock import Busy, run_dir_lock

    try:
        with run_dir_lock(out / "scaled"):
            saved = _saved_pick(out, run)  # written while this one waited
            if saved is not None:
                return saved["scaled"]
            return _pick_scaled(predictor, run, log, out, device)
    except Busy:
        log(f"[compare] another process is timing the scaled row's candidates; waiting for "
            f"its {out / SCALED_FILE}")
        deadline = time.monotonic() + SCALED_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(1.0)
            saved = _saved_pick(out, run)
            if saved is not None:
                return saved["scaled"]
        raise UserError(f"{out / SCALED_FILE} did not appear in {SCALED_WAIT_S:.0f} s while "
                        "another process held its timing; run compare again when it has "
                        "ended") from None


def _saved_pick(out: Path, run: RunSettings) -> dict[str, Any] | None:
    """``out/scaled.json`` when it was picked for this run's budget, else None."""
    saved = atomic.read_json(out / SCALED_FILE)
    return saved if saved is not None and saved.get("budget_ms") == run.search.budget_ms else None


SCALED_WAIT_S = 900.0  # 6 nets exported and timed take about a minute on the 2-core host


def _pick_scaled(predictor: Any, run: RunSettings, log: Callable[[str], None], out: Path,
                 device: Any):
    from srsearch.comparison.fairness import scaled_ecbsr, timed_scaled_ecbsr
    from srsearch.search.run import run_anchors
    from supernet.space import SearchSpace

    space = SearchSpace(scale=run.scale)
    if run.supernet is not None and run.supernet.exists():
        from srsearch.train.supernet_training import load_supernet

        space = load_supernet(run.supernet).space
    try:
        if device is None:
            found, timing = scaled_ecbsr(predictor, space, run.search.budget_ms), {}
        else:
            # beside the search's anchors: judged at the table's speed, as the searched net was
            anchors = (run_anchors(run.run_dir) if device.fingerprint_id() == run.target_id
                       else [])
            found, timing = timed_scaled_ecbsr(
                predictor, space, run.search.budget_ms, device, run.lr_hw, out / "scaled",
                run.export_spec or {}, anchors, lambda m: log(f"[compare] {m}"))
    except (KeyError, UserError) as exc:
        log(f"[compare] note: no scaled ECBSR row, the latency model cannot price it ({exc})")
        return None
    if found is not None and found.get("chosen_by") == "measured":
        at = (f" at the table's speed (the target ran {found['speed']:.3f}x)"
              if found.get("speed", 1.0) != 1.0 else "")
        log(f"[compare] scaled to {run.search.budget_ms:g} ms by measurement: {found['name']} "
            f"({found['measured_ms']:.2f} ms measured{at}, {found['predicted_ms']:.2f} "
            "predicted)")
    elif found is not None and "timed" in found:
        log(f"[compare] note: every timed ECBSR-style net ran over {run.search.budget_ms:g} ms; "
            f"keeping the table's pick {found['name']}")
    if found is None:
        log(f"[compare] note: no ECBSR-style net fits {run.search.budget_ms:g} ms")
    elif found["priced_as"] != "prelu":
        log(f"[compare] note: {found['name']} was priced as its ReLU twin (the table has no "
            "PReLU entries; `srsearch latency build` on the same --out adds them), so it may "
            "run over the budget")
    atomic.write_json(out / SCALED_FILE, {"budget_ms": run.search.budget_ms, "scaled": found,
                                          **timing})
    return found


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
    seeds: int = 1,
    from_scratch: bool = False,
    rep: str | None = None,
    ecb_init: str | None = None,
    predictor: Any = None,
    supernet: Path | None = None,
    accelerator: str | None = None,
    train_only: bool = False,
) -> dict[str, Any]:
    """Train, export, measure and evaluate; write the table (see the module docstring).

    Args:
        steps: Training steps of every model trained here (default: the delivered model's
            supernet steps + fine-tune steps, or its fine-tune steps when the supernet's
            training record is not found).
        seeds: Trainings per model (mean +- std in the table).
        from_scratch: Also train the searched architecture from random initialisation.
        rep: Training-time form of that from-scratch row and of the delivered model's extra
            seeds (`srsearch.models.subnet.REP_KINDS`; default: the run's ``train_rep``).
        ecb_init: How the ECBSR baselines' ECB branches start (`srsearch.models.ecbsr.
            BRANCH_INITS`): "paper" as ECBSR's code, "damped" as the searched net's ECB form
            starts (default: `ecb_init_for` ``rep``, so that both train with the same blocks).
        predictor: The run's latency model; adds the ECBSR-style net scaled to the budget.
        supernet: The run's supernet (default: the one its ``config.json`` names), for its
            training record and the delivered model's extra seeds.
        accelerator: Lightning accelerator of every training here (default: the run's).
        train_only: Train every row's models and stop (no export, timing or table). Several
            such processes given the same arguments share the trainings out (each skips a
            model another one is training); a later call without it finds them trained.
    """
    from srsearch.common.outpaths import prepare_out_dir
    from srsearch.common.rundir_lock import run_dir_lock
    from srsearch.models.ecbsr import BRANCH_INITS
    from srsearch.models.modelio import load_model_file
    from srsearch.models.subnet import REP_KINDS

    run = RunSettings.load(run_dir)
    rep = run.search.train_rep if rep is None else rep
    ecb_init = ecb_init_for(rep) if ecb_init is None else ecb_init
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: give 1 or more")
    if rep not in REP_KINDS:
        raise UserError(f"--rep {rep!r}: choose one of {', '.join(REP_KINDS)}")
    if ecb_init not in BRANCH_INITS:
        raise UserError(f"--ecb-init {ecb_init!r}: choose one of {', '.join(BRANCH_INITS)}")
    check_presets(baselines)
    # a file that does not load fails before training
    delivered = load_model_file(run.run_dir / "model.pt")[0].config()
    supernet = Path(supernet) if supernet is not None else run.supernet
    if supernet is not None:
        run = replace(run, supernet=supernet)
    if accelerator is not None:
        run = replace(run, search=replace(run.search, accelerator=accelerator))
    args = (eval_data, baselines, target, threads, steps, bench_runs, log, seeds, from_scratch,
            rep, ecb_init, predictor, supernet, delivered, train_only)
    if train_only:  # each training locks its own folder; the others may share this one
        return _compare(run, prepare_out_dir(Path(out or run.run_dir / "compare")), *args)
    with run_dir_lock(Path(out or run.run_dir / "compare")) as out:
        return _compare(run, out, *args)


def _compare(run: RunSettings, out: Path, eval_data: Sequence[str], baselines: Sequence[str],
             target: str | None, threads: int | None, steps: int | None, bench_runs: int,
             log: Callable[[str], None], seeds: int, from_scratch: bool, rep: str,
             ecb_init: str, predictor: Any, supernet: Path | None,
             delivered: dict[str, Any], train_only: bool) -> dict[str, Any]:
    from android_bench import device_from_target
    from srsearch.data.datasets import load_images
    from srsearch.evaluation.evaluate import evaluate_models
    from srsearch.models import preset_config, preset_lr
    from srsearch.models.subnet import subnet_config

    run_dir = run.run_dir
    cfg0 = run.search
    sn = supernet_compute(supernet) if supernet is not None and supernet.exists() else None
    steps = steps or cfg0.finetune_steps + (sn["steps"] if sn else 0)
    if steps < 1:
        raise UserError(
            f"--run {run_dir} was not fine-tuned (finetune_steps 0): give --steps N to train "
            "the baselines for N steps"
        )
    seed_list = [cfg0.seed + i for i in range(seeds)]

    # --- what to train: rows, each a list of (seed, model.pt) ---
    def recipe(lr: float, seed: int) -> Any:
        return replace(cfg0.train_config(run.scale, steps, lr), seed=seed)

    jobs: dict[str, TrainJob] = {}
    rows: dict[str, dict[str, Any]] = {SEARCHED: {"role": "delivered", "runs": []}}
    rows[SEARCHED]["runs"].append((cfg0.seed, run.run_dir / "model.pt"))
    if seeds > 1 and supernet is None:
        log("[compare] note: the run's supernet is unknown (give --supernet), so the delivered "
            "model has one seed")
    form = subnet_config(run.pruned_arch(), cfg0.train_rep)  # as the run fine-tuned
    for i, s in enumerate(seed_list[1:] if supernet is not None else [], 1):
        ft = replace(cfg0.train_config(run.scale), seed=s)
        name = seed_name(SEARCHED, i, s)
        jobs[name] = TrainJob(form, ft, _inherited(run, supernet))
        rows[SEARCHED]["runs"].append((s, out / name / "model.pt"))
    # name -> (model config, role, learning rate)
    trained_models: dict[str, tuple[dict[str, Any], str, float]] = {}
    if from_scratch:
        trained_models[SCRATCH] = (subnet_config(run.pruned_arch(), rep), "scratch", cfg0.lr)
    for name in baselines:
        trained_models[name] = (with_ecb_init(preset_config(name, run.scale), ecb_init),
                                "preset", preset_lr(name))
    # --- the target every model is timed on (and the scaled baseline chosen on) ---
    spec = target or (run.target or {}).get("target") or "host"
    opts = dict((run.target or {}).get("options") or {}) if target is None else {}
    if threads is not None:
        opts["threads"] = threads
    device = device_from_target(spec, **opts)
    # a train-only process may run on a training machine, not the target: no timing there;
    # one on the target itself (the host whose fingerprint built the table) times the scaled
    # row's candidates as the scoring call would, so that it trains the net that call reports
    # (session 11: the table's pick was ECBSR-M1C28, the measured one M4C16)
    timing = device if not train_only or _on_target(spec, device, run) else None
    scaled = (_scaled_baseline(predictor, run, log, out, timing)
              if predictor is not None else None)
    if scaled is not None:
        name = scaled["name"]
        role = "preset+scaled" if name in trained_models else "scaled"
        model_cfg, _, lr = trained_models.get(
            name, (with_ecb_init(scaled["config"], ecb_init), role, scaled["lr"]))
        trained_models[name] = (model_cfg, role, lr)
    for name, (model_cfg, role, lr) in trained_models.items():
        rows[name] = {"role": role, "runs": [], "train_config": model_cfg, "lr": lr}
        for i, s in enumerate(seed_list):
            jobs[seed_name(name, i, s)] = TrainJob(model_cfg, recipe(lr, s))
            rows[name]["runs"].append((s, out / seed_name(name, i, s) / "model.pt"))
    trained = train_models(jobs, out, lambda m: log(f"[compare] {m}"), skip_busy=train_only)
    if train_only:
        return {"trained": sorted(trained), "jobs": sorted(jobs)}

    # --- measure: every model in one session on one device (one file per row) ---
    if run.target_id and device.fingerprint_id() != run.target_id:
        log(
            f"[compare] note: measuring on {device.fingerprint_id()}, the run's latency table "
            f"was built on {run.target_id}"
        )
    first = {name: r["runs"][0][1] for name, r in rows.items()}
    files, failed = export_models(first, run.lr_hw, out / "export", cfg0.data,
                                  lambda m: log(f"[compare] {m}"), precision=run.precision)
    from srsearch.search.run import at_table_speed, run_anchors, speed_words, time_beside_anchors

    # beside the search's final anchors when timed on the table's own target: each row is
    # judged at the table's speed, the speed the search met the budget at
    anchors = (run_anchors(run_dir) if predictor is not None
               and device.fingerprint_id() == run.target_id else [])
    log(f"[compare] timing {len(files)} models on {device.fingerprint_id()}, {bench_runs} runs "
        "each" + (f", beside {len(anchors)} of the search's nets" if anchors else ""))
    results, timing = time_beside_anchors(list(files.values()), device, anchors, predictor,
                                          run.lr_hw, out / "export" / "anchors",
                                          run.export_spec, runs=bench_runs)
    read = {name: r.median_ms for name, r in zip(files, results, strict=True)}
    latency = {name: at_table_speed(r, timing) for name, r in zip(files, results, strict=True)}
    if timing["speed"] != 1.0:
        log(f"[compare] the target ran {speed_words(timing)} its latency table: each row's "
            "ms is read at the table's speed, round by round")

    # --- evaluate every seed's model ---
    sets = [
        (s, load_images(s, run.scale, "val" if s == cfg0.data else "all"))
        for s in (eval_data or [cfg0.data])
    ]
    per_seed = {seed_name(n, i, s): p for n, r in rows.items()
                for i, (s, p) in enumerate(r["runs"])}
    models = inference_models(per_seed, run.scale)
    table = evaluate_models(models, sets, run.scale, out / "eval")
    result_rows: dict[str, dict[str, Any]] = {}
    for name in ["bicubic", *rows]:
        model = models[name]
        row = rows.get(name, {"role": "reference", "runs": [(None, None)]})
        names = [seed_name(name, i, s) for i, (s, _) in enumerate(row["runs"])]
        nparams = sum(p.numel() for p in model.parameters())
        if name == SEARCHED:
            compute = delivered_compute(sn, delivered, cfg0.finetune_steps, cfg0.batch_size,
                                        cfg0.lr_patch)
        elif name == "bicubic":
            compute = None
        else:
            compute = training_compute(row["train_config"], steps, cfg0.batch_size,
                                       cfg0.lr_patch)
        result_rows[name] = {
            "role": row["role"],
            "latency_ms": latency.get(name),  # at the table's speed
            "latency_read_ms": read.get(name),
            "params": nparams,
            "macs": count_macs(model, run.lr_hw) if nparams else 0,
            "export_failed": failed.get(name),
            "trained_steps": trained[name]["steps"] if name in trained else None,
            "compute": compute,
            "seeds": [s for s, _ in row["runs"]] if name != "bicubic" else [],
            "psnr_seeds": {s: [table[s][n]["psnr"] for n in names] for s, _ in sets},
            "psnr": {s: _mean([table[s][n]["psnr"] for n in names]) for s, _ in sets},
            "ssim": {s: _mean([table[s][n]["ssim"] for n in names]) for s, _ in sets},
        }
        first_set = sets[0][0]
        log(f"[compare] {name:<16} {result_rows[name]['psnr'][first_set]:.3f} dB on "
            f"{first_set} ({len(names)} seed(s))"
            + (f", {latency[name]:.2f} ms" if name in latency else ""))
    set_names = [s for s, _ in sets]
    from srsearch.evaluation.grid import report_grid

    baseline_psnr = {n: r["psnr"][set_names[0]] for n, r in result_rows.items() if n != SCRATCH}
    crops = report_grid(sets[0][1], models, baseline_psnr, latency, cfg0.budget_ms, run.scale,
                        out / "crops.png")
    result = {
        "run": str(run.run_dir),
        "data": cfg0.data,
        "scale": run.scale,
        "steps": steps,
        "finetune_steps": cfg0.finetune_steps,
        "supernet": sn,
        "seeds": seed_list,
        "forms": {"delivered": cfg0.train_rep, "scratch": rep, "ecb_init": ecb_init},
        "budget_ms": cfg0.budget_ms,
        "lr_hw": list(run.lr_hw),
        "device": device.fingerprint_id(),
        "precision": run.precision,
        "fingerprint": device.fingerprint(),
        "timing": timing,
        "eval_sets": set_names,
        "scaled_baseline": scaled,
        "models": result_rows,
        "margins": margins(result_rows, set_names, cfg0.budget_ms),
        "fair_margins": fair_margins(result_rows, set_names, cfg0.budget_ms),
        "crops": crops,
    }
    atomic.write_json(out / "compare.json", result)
    write_tables(result, out)
    plot(result, out / "compare.png")
    return result


def ecb_init_for(rep: str) -> str:
    """How the ECBSR rows' ECB blocks start beside a searched net trained in form ``rep``: as
    that net's ECB blocks do ("damped") when it trains as ECB blocks, else as ECBSR's code."""
    return "damped" if rep == "ecb" else "paper"


def with_ecb_init(model_cfg: dict[str, Any], ecb_init: str) -> dict[str, Any]:
    """``model_cfg`` with its ECB branches started as ``ecb_init`` (ECBSR rows only; "paper",
    the family's default, leaves the config as the preset gives it)."""
    if model_cfg.get("family") != "ecbsr" or ecb_init == "paper":
        return model_cfg
    return {**model_cfg, "branch_init": ecb_init}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
