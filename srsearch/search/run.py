"""One search run directory: stage 2, stage 3, fine-tuning, evaluation, report.

``run_search`` writes into RUN_DIR, each step skipped when its output exists (so a killed run
reruns only what is missing, and a stage interrupted mid-way resumes from ``search.db``):

| file | what |
|---|---|
| ``config.json`` | the `RunConfig`, the supernet's space, the predictor's target |
| ``search.db`` | Optuna SQLite storage: studies ``stage2`` and ``stage3`` |
| ``arch.json`` | the stage-2 architecture (`ArchConfig` JSON) |
| ``prune.json`` | the stage-3 decision (`PruneConfig` JSON) |
| ``finetune/`` | the fine-tuning run (Lightning checkpoints and logs) |
| ``model.pt`` | the compact model, config + state dict (`srsearch.models.modelio`) |
| ``trials.csv`` | every finished trial of both stages |
| ``pareto.png`` | PSNR against predicted latency of the stage-2 trials, choice marked |
| ``summary.json`` | latency (predicted, measured if a device is given), PSNR/SSIM, wall times |

PSNRs in ``trials.csv`` and the plot are the search's (inherited weights, center crops);
``summary.json``'s ``psnr``/``ssim`` are the final model's on whole validation images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from srsearch.common.atomic import write_json, write_text
from srsearch.common.errors import UserError
from srsearch.common.sizes import TARGET_OUTPUT, lr_size
from srsearch.search._optuna import load_study
from srsearch.search.evaluator import SubnetEvaluator
from srsearch.search.predictor import LatencyPredictor, SearchPredictor
from srsearch.search.pruning import PruneConfig, apply_pruning
from srsearch.search.run_config import RunConfig, _check_run_dir
from srsearch.search.stage2 import (
    STUDY_NAME,
    Stage2Config,
    Stage2Result,
    family_twins,
    search_architecture,
    stage2_result,
)
from srsearch.search.trials import _appender, plot_pareto, write_trials_csv
from supernet.network import SuperNet
from supernet.space import ArchConfig, SearchSpace, macs, params

ANCHOR_NETS = 6  # nets timed beside a checked one to read the session's speed (>= 5)
# interleaved rounds of a timing beside anchors, each read at its own speed (`at_table_speed`):
# over 6 sessions on the 2-core host a file's time at the table's speed spread 5.6 % (sd / mean)
# with 7 rounds, 9.0 % with 3 (docs/search.md, sessions 15-16)
ANCHOR_ROUNDS = 7


def measure_latency(model, device, lr_hw: tuple[int, int], out: Path,
                    export_options: Mapping[str, Any] | None = None,
                    name: str = "model.tflite", anchors: Sequence[ArchConfig] = (),
                    predictor: Any = None) -> dict[str, Any]:
    """Export ``model`` to LiteRT at LR ``lr_hw`` (with the latency table's export settings,
    e.g. ``channels_last_io``) as ``out/name`` and time it on ``device`` (an
    `android_bench.Device`).

    With ``anchors`` (architectures ``predictor`` prices, `anchor_archs`), they are exported
    beside it (``out/<name's stem>_anchors/``) and timed in the same interleaved
    ``benchmark_rounds`` call (`time_beside_anchors`); ``table_speed_ms`` is the model's time
    read round by round at the anchors' speed (`at_table_speed`), what it would read at the
    speed its table was measured at."""
    from srsearch.latency.runner import export_tflite

    path = export_tflite(model, (1, 3, *lr_hw), out / name, export_options or {})
    results, timed = time_beside_anchors([path], device, anchors, predictor, lr_hw,
                                         out / f"{Path(name).stem}_anchors", export_options)
    ms = results[0].median_ms
    return {"median_ms": ms, "device": device.fingerprint_id(),
            "lr_hw": list(lr_hw), "export": dict(export_options or {}),
            "result": results[0].to_dict(), **timed,
            "table_speed_ms": at_table_speed(results[0], timed)}


def time_beside_anchors(paths: Sequence[Path], device: Any, anchors: Sequence[ArchConfig],
                        predictor: Any, lr_hw: tuple[int, int], out: Path,
                        export_options: Mapping[str, Any] | None = None,
                        runs: int | None = None, rounds: int = ANCHOR_ROUNDS
                        ) -> tuple[list[Any], dict[str, Any]]:
    """Time the LiteRT files ``paths`` on ``device`` beside ``anchors`` (architectures that
    ``predictor`` prices, exported to ``out/`` with ``export_options``) in one interleaved
    ``benchmark_rounds`` call of ``rounds`` rounds (the device's default without anchors): the
    results of ``paths``, in order, and ``{"speed", "round_speeds", "anchors", "anchors_ms"}``.
    ``round_speeds`` is, per round, the anchors' median measured / predicted in that round
    (`rerank.session_drift`: 1.0 with fewer than 5), how fast the target ran then against its
    table; ``speed`` the same over their whole-session medians. `at_table_speed` reads a
    file's time at the table's speed from them."""
    from srsearch.search.rerank import round_speeds, session_drift

    extra = export_archs(anchors, lr_hw, out, export_options) if anchors else []
    kw: dict[str, Any] = {"runs": runs} if runs is not None else {}
    if anchors:
        kw["rounds"] = rounds
    results = device.benchmark_rounds([*paths, *extra], **kw)
    beside = results[len(paths):]
    anchors_ms = [r.median_ms for r in beside]
    predicted = [float(predictor.predict(a)) for a in anchors]
    speed = session_drift(predicted, anchors_ms) if anchors else 1.0
    speeds = round_speeds(predicted, [r.extra.get("round_ms") or [] for r in beside])
    return list(results[:len(paths)]), {"speed": speed, "round_speeds": speeds,
                                        "anchors": [a.to_dict() for a in anchors],
                                        "anchors_ms": anchors_ms}


def at_table_speed(result: Any, timed: Mapping[str, Any]) -> float:
    """A `BenchResult` of `time_beside_anchors` read at the latency table's speed: each round's
    median divided by that round's speed (``timed["round_speeds"]``), then the median over the
    rounds (the lower middle one for an even count, as ``benchmark_rounds`` takes); its median
    divided by the session's ``speed`` when the rounds do not line up (a record from before
    round speeds, or a device that reports no rounds). Per round because single rounds of
    single files run 30-50 % slow on the 2-core host: at 7 rounds this cut a file's spread
    over sessions from 8.5 % (session speed) to 5.6 % (docs/search.md, session 15)."""
    speeds = list(timed.get("round_speeds") or [])
    rounds = list((getattr(result, "extra", None) or {}).get("round_ms") or [])
    if not speeds or len(rounds) != len(speeds):
        return result.median_ms / timed.get("speed", 1.0)
    from srsearch.search.rerank import read_at_speeds

    return read_at_speeds(rounds, speeds)


def speed_words(timed: Mapping[str, Any]) -> str:
    """How fast the target ran against its table in a timing beside anchors, for a log line:
    "0.981x" or, with round speeds, "0.981x (rounds 0.952-1.130x)"."""
    text = f"{timed.get('speed', 1.0):.3f}x"
    rounds = timed.get("round_speeds") or []
    if len(rounds) > 1:
        text += f" (rounds {min(rounds):.3f}-{max(rounds):.3f}x)"
    return text


def run_anchors(run_dir: Path) -> list[ArchConfig]:
    """The anchors a finished search run in ``run_dir`` timed beside its delivered net
    (``summary.json``'s ``measured``): the nets to time beside its model again wherever it is
    benchmarked later (none when the search timed nothing)."""
    from srsearch.common.atomic import read_json

    measured = (read_json(Path(run_dir) / "summary.json") or {}).get("measured") or {}
    return [ArchConfig.from_dict(a) for a in measured.get("anchors") or []]


def rerank_timings(folder: Path, arch: ArchConfig) -> list[float]:
    """The times the re-rank in ``folder`` read for ``arch``, each divided by its timing
    session's speed (``session_ms`` in ``rerank/rerank.json``; none without a re-rank with a
    device, or when stage 3 pruned the net it timed)."""
    from srsearch.common.atomic import read_json

    timed = (read_json(Path(folder) / "rerank" / "rerank.json") or {}).get("timed") or []
    return [float(t["session_ms"]) for t in timed
            if t.get("arch") == arch.to_dict() and t.get("session_ms")]


def anchor_archs(trials: Sequence[dict[str, Any]], arch: ArchConfig, predictor: Any,
                 n: int = ANCHOR_NETS) -> list[ArchConfig]:
    """The ``n`` distinct architectures among stage 2's ``trials`` (other than ``arch``) that
    ``predictor`` prices nearest ``arch``: timed beside it, their median measured / predicted
    is the target's speed in that session, read at about the same size of net."""
    target = float(predictor.predict(arch))
    seen = {json.dumps(arch.to_dict(), sort_keys=True)}
    near: list[tuple[float, str, ArchConfig]] = []
    from srsearch.search.rerank import trial_arch

    for t in trials:
        if not t.get("arch"):
            continue
        a = trial_arch(t)
        key = json.dumps(a, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        other = ArchConfig.from_dict(a)
        near.append((abs(float(predictor.predict(other)) - target), key, other))
    return [a for _, _, a in sorted(near, key=lambda r: r[:2])[:n]]


def measure_archs(archs: Sequence[ArchConfig], device: Any, lr_hw: tuple[int, int],
                  out: Path, export_options: Mapping[str, Any] | None = None,
                  anchors: Sequence[ArchConfig] = (), predictor: Any = None,
                  timing: dict[str, Any] | None = None) -> list[float]:
    """Export each of ``archs`` (`export_archs`) and time them all in one interleaved
    ``benchmark_rounds`` call on ``device``; their median ms, in order. With ``anchors``
    (`run_anchors`, priced by ``predictor``), timed in the same session (`time_beside_anchors`,
    exported to ``out/anchors/``): each read at the table's speed (`at_table_speed`), and
    ``timing`` (when given) receives the speeds and the anchors' times."""
    paths = export_archs(archs, lr_hw, out, export_options)
    results, timed = time_beside_anchors(paths, device, anchors, predictor, lr_hw,
                                         Path(out) / "anchors", export_options)
    if timing is not None:
        timing.update(timed)
    return [at_table_speed(r, timed) for r in results]


def time_rounds(archs: Sequence[ArchConfig], device: Any, lr_hw: tuple[int, int], out: Path,
                export_options: Mapping[str, Any] | None = None,
                rounds: int = ANCHOR_ROUNDS) -> list[list[float]]:
    """Export each of ``archs`` (`export_archs`) and time them all in one interleaved
    ``benchmark_rounds`` call of ``rounds`` rounds on ``device``: per architecture, in order,
    its median ms in every round (the re-rank reads them at the shortlist's own speed round by
    round, `rerank.round_speeds`)."""
    paths = export_archs(archs, lr_hw, out, export_options)
    return [list(r.extra["round_ms"]) for r in device.benchmark_rounds(paths, rounds=rounds)]


def export_archs(archs: Sequence[ArchConfig], lr_hw: tuple[int, int], out: Path,
                 export_options: Mapping[str, Any] | None = None) -> list[Path]:
    """Export each of ``archs`` as a plain ``SubNet`` (the timing depends on the ops, not the
    weights) to ``out/a<i>.tflite``; the paths, in order."""
    from srsearch.latency.runner import export_tflite
    from supernet.subnet import SubNet

    out.mkdir(parents=True, exist_ok=True)
    return [export_tflite(SubNet(a).eval(), (1, 3, *lr_hw), out / f"a{i}.tflite",
                          export_options or {}) for i, a in enumerate(archs)]


def run_search(
    supernet: SuperNet,
    predictor: SearchPredictor,
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool = False,
    device: Any = None,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    export_options: Mapping[str, Any] | None = None,
    progress: bool = False,
    supernet_path: Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole search into ``out``; returns the summary.

    Args:
        supernet: The trained stage-1 supernet.
        predictor: Latency model of the target (`SearchPredictor`: ``predict(arch) -> ms``,
            the target, LR size and export settings it holds for); its ops must cover the
            supernet's space.
        device: An `android_bench.Device` to measure the final model on, or None.
        baselines: name -> (latency ms, PSNR) to mark on the plot.
        export_options: `srsearch.deploy.tflite.convert` keywords for that measurement; pass the
            ones the latency table was measured with.
        supernet_path: Where ``supernet`` was loaded from, recorded in ``config.json`` so that
            `srsearch compare` can count its training and re-fine-tune from it.
    """
    from srsearch.common.rundir_lock import run_dir_lock
    from srsearch.search.stage2 import check_budget

    # Before anything is written: a table that lacks some of the space's ops, or a budget no
    # subnet meets, must not leave a config.json behind (a plain retry would be refused, and
    # --resume with another budget too).
    predictor.check_covers(supernet.space)
    if cfg.search_data:
        from srsearch.data.datasets import check_spec

        check_spec(cfg.search_data, supernet.space.scale, flag="--search-data")
    check_budget(supernet.space, predictor, cfg.budget_ms * (1 + cfg.overshoot))
    with run_dir_lock(Path(out)) as out:
        return _run_search(supernet, predictor, cfg, out, resume, device, baselines,
                           export_options, progress, supernet_path)


def _run_search(supernet: SuperNet, predictor: SearchPredictor, cfg: RunConfig, out: Path,
                resume: bool, device: Any, baselines: Mapping[str, tuple[float, float]] | None,
                export_options: Mapping[str, Any] | None, progress: bool,
                supernet_path: Path | None = None) -> dict[str, Any]:
    from srsearch.models.modelio import load_model_file, save_model

    space = supernet.space
    scale = space.scale
    config = {**asdict(cfg), "space": repr(space),
              "target": predictor.fingerprint_id,
              # how to rebuild the target's device (`srsearch compare` measures on it)
              "target_spec": predictor.target_spec,
              # how the table's nets were exported (e.g. {"precision": "int8"}): ship the same
              "export_spec": dict(predictor.export_spec),
              "supernet_path": str(Path(supernet_path).resolve()) if supernet_path else None}
    _check_run_dir(out, config, resume)
    supernet = supernet.eval()
    images = search_images(cfg, scale)
    evaluator = SubnetEvaluator(supernet, images, scale, crop=cfg.crop)
    lr_hw = tuple(predictor.lr_hw or _default_lr_hw(scale))
    measure = None
    if device is not None and cfg.latency_rounds > 0:
        def measure(archs: Sequence[ArchConfig], folder: Path) -> list[list[float]]:
            return time_rounds(archs, device, lr_hw, folder, export_options)
    choice = _choose(supernet, predictor, cfg, out, evaluator, progress, measure=measure)
    check = None
    model_path = out / "model.pt"
    if (out / CHECK_FILE).is_file() or (device is not None and cfg.latency_rounds > 0
                                        and not model_path.is_file()):
        choice, check = _latency_check(supernet, predictor, cfg, out, evaluator, progress,
                                       choice, device, lr_hw, export_options, measure)
    s2, s3, arch, subnet, prune = choice.s2, choice.s3, choice.arch, choice.subnet, choice.prune

    # --- fine-tune ---
    if not model_path.is_file():
        compact = apply_pruning(subnet, prune).eval()
        ft: dict[str, Any] = {"steps": 0}
        if cfg.finetune_steps > 0:
            from srsearch.search.finetune import finetune

            tcfg = cfg.train_config(scale)
            teacher = supernet.get_active_subnet(space.max_arch()) if cfg.distill else None
            t0 = time.perf_counter()
            from srsearch.models import inference_form
            from srsearch.models.subnet import training_form

            # trained as blocks from exactly the inherited function, delivered collapsed
            tuned, ft = finetune(training_form(compact, cfg.train_rep), tcfg,
                                 out / "finetune", teacher=teacher, distill=cfg.distill)
            compact = inference_form(tuned).eval()
            ft["rep"] = cfg.train_rep
            ft["wall_s_last_start"] = time.perf_counter() - t0
        save_model(compact, model_path, extra={"finetune": ft, "arch": arch.to_dict(),
                                                "prune": prune.to_dict()})
    model, extra = load_model_file(model_path)

    # --- evaluate, measure, report ---
    from srsearch.evaluation.evaluate import evaluate

    final_arch = prune.pruned_arch()
    result = evaluate(model, images, scale)
    measured = (measure_latency(model, device, lr_hw, out, export_options,
                                anchors=anchor_archs(s2.trials, final_arch, predictor),
                                predictor=predictor)
                if device is not None else None)
    pred_ms = float(predictor.predict(final_arch))
    final_point = (pred_ms, s3.psnr) if s3 else (s2.latency_ms, s2.psnr)
    plot_pareto(out / "pareto.png", s2.trials, cfg.budget_ms, (s2.latency_ms, s2.psnr),
                final_point, baselines, floor_ms=choice.s2_floor,
                stage2_budget_ms=choice.s2_budget)
    stages = {"stage2": _stage_summary(s2), **({"stage3": _stage_summary(s3)} if s3 else {})}
    summary = {
        "budget_ms": cfg.budget_ms,
        "floor_ms": choice.floor_ms,
        "stage2_budget_ms": choice.s2_budget,
        "target": config["target"],
        "arch": arch.to_dict(),
        "pruned_arch": final_arch.to_dict(),
        "predicted_latency_ms": pred_ms,
        "measured_latency_ms": measured["median_ms"] if measured else None,
        # that timing divided by the session's speed (the anchors' measured / predicted)
        "measured_table_speed_ms": measured["table_speed_ms"] if measured else None,
        "measured": measured,
        "latency_check": check,
        "psnr": result["mean"]["psnr"],
        "ssim": result["mean"]["ssim"],
        "psnr_bicubic": result["mean"]["psnr_bicubic"],
        "ssim_bicubic": result["mean"]["ssim_bicubic"],
        "val_images": len(images),
        "val_data": cfg.search_data or f"{cfg.data}:val",
        "params": params(final_arch),
        "macs": macs(final_arch, lr_hw),
        "lr_hw": list(lr_hw),
        "search_wall_s": sum(s["wall_s"] for s in stages.values()),
        "candidates_scored": sum(s["n_scored"] for s in stages.values()),
        "stages": stages,
        "finetune": extra.get("finetune"),
        "search_metric": f"Y-PSNR/SSIM with inherited weights on {cfg.crop}x{cfg.crop} LR "
                         "center crops" if cfg.crop else "whole images",
    }
    write_json(out / "summary.json", summary)
    return summary


def search_images(cfg: RunConfig, scale: int) -> list:
    """The images the search scores candidates on: every image of ``cfg.search_data``, or
    the val split of ``cfg.data``."""
    from srsearch.data.datasets import load_images

    if cfg.search_data:
        return load_images(cfg.search_data, scale, "all")
    return load_images(cfg.data, scale, "val")


CHECK_FILE = "latency_check.json"


@dataclass
class Choice:
    """What stages 2 and 3 chose in one folder (the run directory, or a calibration round's
    ``cal<k>/``), with the latency window they searched in."""

    dir: Path
    s2: Stage2Result
    s3: Any  # Stage3Result, or None without a pruning search
    arch: ArchConfig
    subnet: Any  # supernet.get_active_subnet(arch), inherited weights
    prune: PruneConfig
    floor_ms: float
    s2_budget: float
    s2_floor: float


def _choose(supernet: SuperNet, predictor: LatencyPredictor, cfg: RunConfig, out: Path,
            evaluator: SubnetEvaluator, progress: bool, floor: float | None = None,
            budget_ms: float | None = None, measure: Any = None) -> Choice:
    """Stage 2 (+ re-rank) and stage 3 in ``out`` (each skipped when its file is there), both
    considering nets predicted in [``floor`` (default ``cfg.budget_floor``) x the budget,
    ``budget_ms`` (default the budget)]. With ``measure`` (`measure_archs` on the run's
    device) the re-rank trains only candidates measured in [``cfg.measured_floor`` x the
    budget, the budget] once divided by the timing session's speed against the latency model
    (`srsearch.search.rerank`)."""
    from srsearch.search.stage3 import STUDY_NAME as STAGE3_STUDY
    from srsearch.search.stage3 import search_pruning, space_floors, stage3_result

    space = supernet.space
    out.mkdir(parents=True, exist_ok=True)
    db = out / "search.db"
    csv_path = out / "trials.csv"

    # --- stage 2 (under the overshot budget, if any; stage 3 prunes back under the budget) ---
    floor = cfg.budget_floor if floor is None else floor
    budget = cfg.budget_ms if budget_ms is None else budget_ms
    floor_ms = latency_floor(space, predictor, cfg.budget_ms, floor)
    s2_budget = budget * (1 + cfg.overshoot)
    s2_floor = latency_floor(space, predictor, cfg.budget_ms * (1 + cfg.overshoot), floor)
    floors = space_floors(space)
    s2_predictor = (PrunableLatency(predictor, floors, cfg.max_ratio, budget, floor_ms,
                                    s2_budget) if cfg.overshoot else predictor)
    twins = tuple(family_twins(space, s2_predictor, s2_budget, s2_floor, cfg.rerank_family)
                  if cfg.rerank_family else ())
    s2cfg = Stage2Config(budget_ms=s2_budget, floor_ms=s2_floor, n_trials=cfg.trials,
                         sampler=cfg.sampler, seed=cfg.seed, first=twins)
    arch_path = out / "arch.json"
    if arch_path.is_file():
        study = load_study(db, STUDY_NAME)
        if study is None:
            # Deleting arch.json alone would not do: stage 3, the fine-tune and the model
            # in this folder belong to the old architecture.
            raise UserError(f"{arch_path} exists but {db} holds no stage-2 search (the "
                            f"database was deleted or replaced), so this run cannot be resumed; "
                            f"search again with another --out (or delete {out} first)")
        s2 = stage2_result(study)
        if (out / "rerank" / "rerank.json").is_file():
            from srsearch.search.rerank import apply_choice

            chosen = json.loads((out / "rerank" / "rerank.json").read_text())["chosen"]
            s2 = apply_choice(s2, chosen)
    else:
        s2 = search_architecture(space, s2_predictor, evaluator, s2cfg, db,
                                 on_trial=_appender(csv_path, "stage2"), progress=progress)
        if cfg.rerank > 1:
            from srsearch.search.rerank import apply_choice, rerank

            window = (cfg.measured_floor * cfg.budget_ms, cfg.budget_ms)
            ranked = rerank(supernet, s2.trials, cfg.rerank,
                            cfg.train_config(space.scale, cfg.rerank_steps), out / "rerank",
                            measure=measure, window=window if measure else None,
                            init=cfg.rerank_from, pool=cfg.rerank_pool, rep=cfg.train_rep,
                            first=twins)
            s2 = apply_choice(s2, ranked["chosen"])
        write_text(arch_path, json.dumps(s2.arch.to_dict(), indent=2))
    arch = ArchConfig.from_json(arch_path.read_text())
    subnet = supernet.get_active_subnet(arch).eval()

    # --- stage 3 ---
    prune_path = out / "prune.json"
    if prune_path.is_file():
        study = load_study(db, STAGE3_STUDY)
        s3 = stage3_result(study, subnet, floors) if study is not None else None
    elif cfg.stage3_trials > 0 and not skips_stage3(cfg, out):
        s3 = search_pruning(subnet, predictor, evaluator.scorer, budget,
                            cfg.stage3_trials, db, floors=floors, floor_ms=floor_ms,
                            max_ratio=cfg.max_ratio,
                            sampler=cfg.stage3_sampler, seed=cfg.seed,
                            on_trial=_appender(csv_path, "stage3"), progress=progress)
        write_text(prune_path, s3.prune.to_json())
    else:
        if cfg.stage3_trials > 0:
            print("[search] stage 3 skipped: the re-rank chose this net by training it, inside "
                  "the budget; pruning it by the inherited score it overruled would deliver a "
                  "net nothing trained or timed (--overshoot > 0 makes stage 3 cut a larger "
                  "net down to the budget)", flush=True)
        s3 = None
        write_text(prune_path, PruneConfig(arch).to_json())
    prune = PruneConfig.from_json(prune_path.read_text())
    write_trials_csv(csv_path, {"stage2": s2.trials, **({"stage3": s3.trials} if s3 else {})})
    return Choice(out, s2, s3, arch, subnet, prune, floor_ms, s2_budget, s2_floor)


def skips_stage3(cfg: RunConfig, out: Path) -> bool:
    """Whether stage 3 keeps the net in ``out`` unpruned: a re-rank chose it (``rerank.json``)
    and ``cfg.overshoot`` is 0, so it fits the budget already and was chosen by training,
    which stage 3's inherited score would overrule."""
    return cfg.overshoot == 0 and (Path(out) / "rerank" / "rerank.json").is_file()


class CalibratedPredictor:
    """``predictor`` times ``ratio``: measured over predicted ms of a net timed end to end on
    the target. The latency check's correction when the target runs at another speed than
    when its table was measured (other load, another clock or thermal state): on a 2-core
    host, timings drift 5-15 % within an hour (docs/latency.md)."""

    def __init__(self, predictor: LatencyPredictor, ratio: float) -> None:
        self.predictor, self.ratio = predictor, float(ratio)

    def predict(self, arch: ArchConfig) -> float:
        return self.ratio * float(self.predictor.predict(arch))

    def __getattr__(self, name: str) -> Any:  # fingerprint_id, lr_hw, ... of the table
        return getattr(self.predictor, name)


def _latency_check(supernet: SuperNet, predictor: SearchPredictor, cfg: RunConfig, out: Path,
                   evaluator: SubnetEvaluator, progress: bool, first: Choice, device: Any,
                   lr_hw: tuple[int, int], export_options: Mapping[str, Any] | None,
                   measure: Any = None) -> tuple[Choice, dict[str, Any]]:
    """Time the chosen pruned architecture end to end, beside `anchor_archs` in one session;
    outside ``[measured_floor x budget, budget]`` (its time divided by the session's speed
    when ``cfg.check_speed`` is "session", as read when "raw"), search again (stages 2 and 3
    in ``cal<k>/``, among nets predicted inside that window's lower three quarters) with the
    predictor scaled by that round's judged/predicted ratio, up to ``cfg.latency_rounds``
    times. Every round is recorded in ``latency_check.json`` (a resumed run re-measures
    nothing it has); returns the accepted round's choice (the first in the window, else the
    slowest within the budget, else the fastest) and the record."""
    from srsearch.common.atomic import read_json
    from supernet.subnet import SubNet

    path = out / CHECK_FILE
    lo, hi = cfg.measured_floor * cfg.budget_ms, cfg.budget_ms
    state = read_json(path) or {}
    rounds: list[dict[str, Any]] = list(state.get("rounds", []))
    choices, ratio, note = [first], 1.0, None
    for k in range(cfg.latency_rounds + 1):
        choice = choices[k]
        arch = choice.prune.pruned_arch()
        if k < len(rounds) and rounds[k]["arch"] == arch.to_dict():
            row = rounds[k]
        elif device is None:
            note = f"round {k} was not measured: no device given"
            break
        else:
            model = SubNet(arch).eval()  # the timing depends on the ops, not the weights
            near = anchor_archs(choice.s2.trials, arch, predictor)
            timed = measure_latency(model, device, lr_hw, choice.dir, export_options,
                                    name="check.tflite", anchors=near, predictor=predictor)
            row = {"round": k, "dir": choice.dir.name if k else ".", "calibration": ratio,
                   "arch": arch.to_dict(), "predicted_ms": float(predictor.predict(arch)),
                   "measured_ms": timed["median_ms"], "speed": timed["speed"],
                   "round_speeds": timed["round_speeds"],
                   "table_speed_ms": timed["table_speed_ms"],
                   "anchors": timed["anchors"], "anchors_ms": timed["anchors_ms"]}
            rounds[k:] = [row]
            write_json(path, {**state, "rounds": rounds})
        # a round from before anchors were timed has no speed: judged as read; one from before
        # round speeds (session 16) at its session's speed
        session = cfg.check_speed == "session"
        speed = row.get("speed", 1.0) if session else 1.0
        at_speed = (row.get("table_speed_ms", row["measured_ms"] / speed) if session
                    else row["measured_ms"])
        # the re-rank's timings of the same net, each at its session's speed, count too (a
        # correction round's re-rank read them against the calibrated model: undone here)
        earlier = ([e / row["calibration"] for e in rerank_timings(choice.dir, arch)]
                   if cfg.check_speed == "session" else [])
        row["earlier_ms"] = earlier
        row["judged_ms"] = (at_speed + sum(earlier)) / (1 + len(earlier))
        row["in_window"] = lo <= row["judged_ms"] <= hi
        at = (f" = {at_speed:.2f} ms at the table's speed (the target ran "
              f"{speed_words(row)} its table beside {len(row.get('anchors', []))} anchors)"
              if speed != 1.0 else "")
        if earlier:
            at += (f"; {row['judged_ms']:.2f} ms with the re-rank's timing at its session's "
                   f"speed ({', '.join(f'{e:.2f}' for e in earlier)})")
        print(f"[search] latency check {k}: {row['measured_ms']:.2f} ms measured{at}, "
              f"{row['predicted_ms'] * row['calibration']:.2f} predicted; window "
              f"[{lo:.2f}, {hi:.2f}] ms: {'in' if row['in_window'] else 'out'}", flush=True)
        if row["in_window"] or k == cfg.latency_rounds:
            break
        ratio = row["judged_ms"] / row["predicted_ms"]
        try:
            # The corrected search considers only nets predicted inside the window (round 0
            # may have chosen one under it within --budget-floor's wider band), and not its
            # top quarter: a net's time moves by a few % between measurements on a busy or
            # drifting target, and one chosen at the budget reads over it half the time.
            choices.append(_choose(supernet, CalibratedPredictor(predictor, ratio), cfg,
                                   out / f"cal{k + 1}", evaluator, progress,
                                   floor=max(cfg.budget_floor, cfg.measured_floor),
                                   budget_ms=hi - (hi - lo) / 4, measure=measure))
        except UserError as exc:  # e.g. no net fits the corrected budget
            note = f"round {k + 1} found no architecture: {exc}"
            break
    rounds = rounds[:len(choices)]
    ok = [i for i, r in enumerate(rounds) if r.get("in_window")]
    for r in rounds:  # a stale round that was not judged above counts as read
        r.setdefault("judged_ms", r["measured_ms"])
    under = [i for i, r in enumerate(rounds) if r["judged_ms"] <= hi]
    accepted = (ok[0] if ok else max(under, key=lambda i: rounds[i]["judged_ms"]) if under
                else min(range(len(rounds)), key=lambda i: rounds[i]["judged_ms"]))
    state = {"budget_ms": cfg.budget_ms, "window_ms": [lo, hi], "speed": cfg.check_speed,
             "rounds": rounds,
             "accepted": accepted, "accepted_dir": rounds[accepted]["dir"],
             "in_window": bool(ok), "note": note}
    write_json(path, state)
    if not ok:
        print(f"[search] warning: no round measured within [{lo:.2f}, {hi:.2f}] ms; kept round "
              f"{accepted} ({rounds[accepted]['judged_ms']:.2f} ms)"
              + (f"; {note}" if note else ""), flush=True)
    return choices[accepted], state


def chosen_dir(run_dir: Path) -> Path:
    """The folder whose ``arch.json``/``prune.json`` the run's model was made from: the run
    directory, or the calibration round (``cal<k>/``) its latency check accepted."""
    from srsearch.common.atomic import read_json

    check = read_json(Path(run_dir) / CHECK_FILE) or {}
    return Path(run_dir) / check.get("accepted_dir", ".")


class PrunableLatency:
    """Stage 2's predictor under ``--overshoot``: a candidate over the budget counts as feasible
    only if stage 3 can prune it back into [floor, budget], tested with uniform ratios
    (`pruning.uniform_fit`, stage 3's own starting point). Width pruning keeps depth, and
    narrow layers are slow, so a deep net can miss the budget at every width (or a coarse
    width step can jump over the band). Such a candidate reports the stage-2 budget plus its
    miss (ms over the budget at the largest ratio, or ms under the floor), which makes it
    infeasible for stage 2 and says how far off it is."""

    def __init__(self, predictor: LatencyPredictor, floors: Mapping[str, int],
                 max_ratio: float, budget_ms: float, floor_ms: float,
                 stage2_budget_ms: float) -> None:
        self.predictor, self.floors, self.max_ratio = predictor, dict(floors), max_ratio
        self.budget_ms, self.floor_ms = budget_ms, floor_ms
        self.stage2_budget_ms = stage2_budget_ms

    def predict(self, arch: ArchConfig) -> float:
        from srsearch.search.pruning import uniform_fit

        ms = float(self.predictor.predict(arch))
        if ms <= self.budget_ms:
            return ms
        _, low = uniform_fit(arch, self.predictor.predict, self.floors, self.budget_ms,
                             self.max_ratio)
        miss = max(low - self.budget_ms, self.floor_ms - low)  # > 0: outside [floor, budget]
        return ms if miss <= 0 else max(ms, self.stage2_budget_ms + miss)

    def __getattr__(self, name: str) -> Any:  # fingerprint_id, lr_hw, ... of the table
        return getattr(self.predictor, name)


def latency_floor(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float,
                  fraction: float) -> float:
    """The lowest predicted latency a candidate may have: ``fraction`` of the budget, or of
    the largest net's predicted latency when the whole space fits the budget (a floor above
    every net would leave nothing to search)."""
    if fraction <= 0:
        return 0.0
    return fraction * min(budget_ms, float(predictor.predict(space.max_arch())))


def _stage_summary(r: Stage2Result | Any) -> dict[str, Any]:
    return {"n_trials": r.n_trials, "n_feasible": r.n_feasible, "n_scored": r.n_scored,
            "wall_s": r.wall_s, "latency_ms": r.latency_ms, "psnr": r.psnr, "ssim": r.ssim}


def _default_lr_hw(scale: int) -> tuple[int, int]:
    return lr_size(TARGET_OUTPUT, scale)

