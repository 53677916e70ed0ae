"""Stage 3: per-layer pruning ratios for the stage-2 architecture, by Bayesian optimisation.

One ratio in [0, ``max_ratio``] per prunable channel group of the stage-2 subnet
(`srsearch.search.pruning`: the trunk groups, i.e. the head with every res / same-width wide
cell it feeds, and each conv or wide cell's output; every res and wide cell's inner width).
A ratio becomes a width rounded to the multiple-of-4 grid and kept at or above the floor of its
kind, and the channels with the largest L1 filter norms are kept (`prune_by_ratios`). The
predicted latency of the pruned architecture must stay within the budget; the objective is the
PSNR of the compact model with the inherited (kept) weights.

The sampler is Optuna's ``GPSampler`` by default (``"gp"``): the parameters are few (up to
~17 for depth 8), continuous and bounded, and every trial is deterministic, which is what a
Gaussian process with log-EI handles best; constrained log-EI models the latency constraint
too. ``"tpe"`` is available for comparison. The first trial is always the unpruned subnet
(all ratios 0), so the result is never worse than stage 2's own candidate on the search
images; when that is over the budget (``--overshoot``), the second is the least uniform
ratio that fits (`uniform_fit`), so the search starts from a feasible point.

Floors: pruned widths may go below the search space's minimum (the compact `SubNet` is
standalone; any positive width is a valid `ArchConfig`), but a latency table only holds the
widths of the space it was built for. `space_floors` gives the space's minima, what
`srsearch search` uses; lower floors need a predictor that covers them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial

from srsearch.common.errors import UserError
from srsearch.search._optuna import (
    WALL_ATTR,
    ScoreBook,
    best_trial,
    completed,
    counts,
    open_study,
    record,
    run_trials,
)
from srsearch.search.evaluator import ImageScorer
from srsearch.search.predictor import LatencyPredictor
from srsearch.search.pruning import (
    STEP,
    PruneConfig,
    apply_pruning,
    channel_groups,
    prune_by_ratios,
    uniform_fit,
)
from supernet.cells import KINDS
from supernet.space import SearchSpace
from supernet.subnet import SubNet

SAMPLERS: tuple[str, ...] = ("gp", "tpe")
STUDY_NAME = "stage3"


def space_floors(space: SearchSpace) -> dict[str, int]:
    """Pruning floors per group kind = the space's smallest width of that kind (the trunk's,
    and each kind's inner widths: ``res_inner``, ``wide_inner``)."""
    return {"trunk": min(space.widths),
            **{f"{k.name}_inner": min(k.inner_choices(space, 0)) for k in KINDS.values()
               if k.has_inner}}


@dataclass
class Stage3Result:
    """The best feasible pruning decision and what the search did."""

    prune: PruneConfig
    latency_ms: float
    psnr: float
    ssim: float
    n_trials: int
    n_feasible: int
    n_scored: int
    wall_s: float
    trials: list[dict[str, Any]] = field(default_factory=list)


def prunable(model: SubNet, floors: Mapping[str, int]) -> list[str]:
    """Groups whose width can shrink at all (low-rank groups follow their cell's width)."""
    return [g.name for g in channel_groups(model.arch)
            if g.kind != "low" and g.size > max(floors.get(g.kind, STEP), STEP)]


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "gp":
        with warnings.catch_warnings():  # deterministic_objective is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise UserError(f"--stage3-sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def search_pruning(
    model: SubNet,
    predictor: LatencyPredictor,
    scorer: ImageScorer,
    budget_ms: float,
    n_trials: int,
    db: Path,
    *,
    floors: Mapping[str, int] | None = None,
    floor_ms: float = 0.0,
    max_ratio: float = 0.75,
    sampler: str = "gp",
    seed: int = 0,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    progress: bool = False,
) -> Stage3Result:
    """Run (or resume) stage 3 on ``model`` in SQLite file ``db``.

    Args:
        model: The stage-2 subnet with its inherited weights.
        scorer: Scores compact models (the same images as stage 2).
        floors: Smallest width per group kind (`space_floors`); default 4 for every kind.
        floor_ms: Lowest predicted latency a pruned net may have (stage 2's latency floor).
        max_ratio: Largest ratio per group.

    ``n_trials``, ``max_ratio`` and ``sampler`` are checked by their owner,
    `srsearch.search.run.RunConfig`.
    """
    floors = dict(floors or {})
    names = prunable(model, floors)
    settings = {"budget_ms": budget_ms, "arch": model.arch.to_json(), "floors": floors,
                "max_ratio": max_ratio, "sampler": sampler, "seed": seed}
    if floor_ms:  # only when set, so that searches stored before floors resume
        settings["floor_ms"] = floor_ms
    study = open_study(db, STUDY_NAME, make_sampler(sampler, seed), settings)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(dict.fromkeys(names, 0.0))  # the unpruned subnet first
        # Over the budget (stage 2 overshot it): next, the least uniform pruning that fits,
        # so that the search starts from a feasible point however narrow the band.
        ratio, ms = uniform_fit(model.arch, predictor.predict, floors, budget_ms, max_ratio)
        if ratio > 0 and floor_ms <= ms <= budget_ms:
            study.enqueue_trial(dict.fromkeys(names, ratio))
    book = ScoreBook(study)

    def objective(trial: Trial) -> float:
        ratios = {n: trial.suggest_float(n, 0.0, max_ratio) for n in names}
        prune = prune_by_ratios(model, ratios, floors)
        arch = prune.pruned_arch()  # same widths -> same channels: importance is fixed
        return book.trial(trial, arch, float(predictor.predict(arch)), budget_ms,
                          lambda: scorer.score(apply_pruning(model, prune)), floor_ms)

    # Nothing to prune: one trial (the unpruned net) says all there is.
    total = n_trials if names else 1
    run_trials(study, objective, total, on_trial=on_trial, progress=progress,
               description=f"stage 3 ({sampler})")
    return stage3_result(study, model, floors)


def stage3_result(study: optuna.Study, model: SubNet,
                  floors: Mapping[str, int]) -> Stage3Result:
    trials = completed(study)
    best = best_trial(trials)
    if best is None:
        raise UserError(f"stage 3 found no pruning of {model.arch.to_json()} within the budget "
                        f"in {len(trials)} trials; raise --stage3-trials, --max-ratio or "
                        "--budget-ms, or lower --overshoot")
    prune = prune_by_ratios(model, best.params, floors)
    a = best.user_attrs
    return Stage3Result(
        prune=prune,
        latency_ms=a["latency_ms"],
        psnr=a["psnr"],
        ssim=a["ssim"],
        **counts(trials),
        wall_s=float(study.user_attrs.get(WALL_ATTR, 0.0)),
        trials=[{**record(t), "ratios": dict(t.params)} for t in trials],
    )

