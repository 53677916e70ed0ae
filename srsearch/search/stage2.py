"""Stage 2: architecture and pruning search under a latency budget.

Maximise the validation PSNR of a supernet subnet (inherited weights) subject to
``predictor.predict(arch) <= budget_ms``. The predictor and the evaluator are passed in.

The pruning scheme searched here is structured filter (channel) pruning: every layer's width
is a choice of the space, and a width of ``w`` keeps the supernet's first ``w`` channels, which
`SuperNet.reorder_channels` sorted by importance (L1 norm). XNNPACK's sparse 1x1 inference (the
other scheme a phone runtime offers) is left out: the latency table has no sparse entries, so
the search could not see whether it pays on the target (docs/search.md).

Candidates are proposed in one of three ways (``sampler``; docs/search.md has the
measurement behind the default):

- ``evolution`` (default): regularised evolution (Real et al. 2019), constraint-aware: see
  `RegularizedEvolution`. Every trial is a feasible candidate, new while any is left.
- ``tpe``: Optuna's TPE (Optuna 5 defaults: multivariate, constant liar) over a define-by-run
  space: depth, head width, then per cell its kind, width (conv, wide) and inner width (res,
  wide). A res cell's width is its input width, so it is not a parameter.
- ``random``: Optuna's random sampler, the baseline.

Infeasible candidates never cost a PSNR evaluation: the predictor is asked first; an
infeasible trial finishes at once with a placeholder value and its constraint value
``latency - budget > 0`` (``trial.set_constraint``), from which TPE learns where the feasible
region is. Scores are cached by architecture JSON across the whole search, including what a
previous (killed) run stored in the study.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, Trial

from srsearch.common.errors import UserError
from srsearch.search._optuna import (
    WALL_ATTR,
    ScoreBook,
    best_trial,
    completed,
    counts,
    latency_violation,
    open_study,
    record,
    run_trials,
)
from srsearch.search.evaluator import Score
from srsearch.search.predictor import LatencyPredictor
from supernet.cells import KINDS
from supernet.space import ArchConfig, CellConfig, SearchSpace, macs

SAMPLERS: tuple[str, ...] = ("evolution", "tpe", "random")
STUDY_NAME = "stage2"


class ArchEvaluator(Protocol):
    """What stage 2 needs of an accuracy evaluator (`SubnetEvaluator` is one)."""

    def score(self, arch: ArchConfig) -> Score: ...


@dataclass(frozen=True)
class Stage2Config:
    """Settings of one stage-2 search.

    Attributes:
        budget_ms: Latency budget; a candidate is feasible when its predicted ms <= this.
        floor_ms: ... and >= this (0: no floor). `run_search` sets it from ``budget_floor``:
            fine-tuned PSNR rises with MACs (docs/search.md), so by default the search only
            considers nets that spend most of the budget.
        n_trials: Finished trials in total (feasible or not, over all restarts).
        sampler: "evolution", "tpe" or "random" (docs/search.md says which wins and why).
        seed: Seed of the sampler.
        n_startup: TPE: random trials before the model is used.
        population, tournament: Evolution: population size (the last ``population``
            feasible candidates) and tournament size.
        max_scored: Stop early once this many distinct candidates were scored (benchmarks).
        first: Architectures scored as the first trials of a new search, before the sampler
            draws (`family_twins`: the hand-designed family scaled to the budget, so stage 2
            and the re-rank always hold it).
    """

    budget_ms: float
    floor_ms: float = 0.0
    n_trials: int = 200
    sampler: str = "evolution"
    seed: int = 0
    n_startup: int = 10
    population: int = 16
    tournament: int = 4
    max_scored: int | None = None
    first: tuple[ArchConfig, ...] = ()

    def __post_init__(self) -> None:
        # budget, trials and sampler are the user's settings, checked where they are defined
        # (`srsearch.search.run.RunConfig`); the floor and the evolution sizes are this stage's.
        if not 0 <= self.floor_ms < self.budget_ms:
            raise UserError(f"latency floor {self.floor_ms:g} ms must be in [0, budget "
                            f"{self.budget_ms:g} ms); lower --budget-floor")
        if not 1 <= self.tournament <= self.population:
            raise UserError(f"tournament {self.tournament} must be in 1..population "
                            f"({self.population})")


@dataclass
class Stage2Result:
    """The best feasible architecture and what the search did."""

    arch: ArchConfig
    latency_ms: float
    psnr: float
    ssim: float
    n_trials: int  # finished trials
    n_feasible: int
    n_scored: int  # distinct candidates scored by the evaluator
    wall_s: float  # time in the trial loop, over all restarts
    trials: list[dict[str, Any]] = field(default_factory=list)  # `_optuna.record` per trial


def family_twins(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float,
                 floor_ms: float, n: int) -> list[ArchConfig]:
    """The ``n`` ECBSR-style nets of the space (`SearchSpace.chains`) with the most MACs among
    those ``predictor`` puts in ``[floor_ms, budget_ms]`` (ties: the slower first): the
    hand-designed family scaled to the budget as a user would, in the space's own ops (ReLU,
    its skip). At 30 ms on the 2-core host these are head 32 + one conv 32 and ECBSR-M4C16's
    twin; the slowest under the budget by the table would be M5C12 and M8C8, narrow nets that
    XNNPACK runs at fewer MACs per ms (docs/latency.md). Seeding stage 2 with them and
    re-ranking them beside its picks means the search delivers one of them unless something
    else trains better (docs/search.md, session 13)."""
    priced = [(macs(a, (1, 1)), float(predictor.predict(a)), a) for a in space.chains()]
    fit = [p for p in priced if floor_ms <= p[1] <= budget_ms]
    return [a for _, _, a in sorted(fit, key=lambda p: (-p[0], -p[1]))[:n]]


def check_budget(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float) -> float:
    """The predicted latency of the space's smallest architecture; UserError if even that
    exceeds the budget."""
    lowest = predictor.predict(space.min_arch())
    if lowest > budget_ms:
        target = getattr(predictor, "fingerprint_id", None)
        on = f" on target {target}" if target else ""
        raise UserError(
            f"budget {budget_ms:g} ms is below the smallest subnet's predicted {lowest:.2f} ms"
            f"{on} (min_arch: {space.min_arch().to_json()}); raise --budget-ms to at least "
            f"{lowest:.2f} or shrink the search space (fewer/narrower layers)"
        )
    return lowest


# --- the define-by-run encoding --------------------------------------------------------------


def _step(values: Sequence[int]) -> int | None:
    """The common difference of an arithmetic progression of >= 2 values, else None."""
    if len(values) < 2:
        return None
    d = values[1] - values[0]
    ok = d > 0 and all(b - a == d for a, b in zip(values, values[1:], strict=False))
    return d if ok else None


def _suggest(trial: Trial, name: str, values: Sequence[int]) -> int:
    """An ordered integer parameter when the choices are evenly spaced, else categorical."""
    d = _step(values)
    if d is None:
        return trial.suggest_categorical(name, list(values))
    return trial.suggest_int(name, values[0], values[-1], step=d)


def suggest_arch(trial: Trial, space: SearchSpace) -> ArchConfig:
    """Sample an architecture define-by-run: depth, head width, then per cell kind and widths.

    Parameter names: ``depth``, ``head_width``, ``c{i}_block``, ``c{i}_width`` (conv only),
    ``c{i}_res_inner``, ``c{i}_wide_inner`` (their ranges differ, so they are separate).
    """
    depth = trial.suggest_int("depth", space.min_depth, space.max_depth)
    head = _suggest(trial, "head_width", space.widths)
    cells, cin = [], head
    for i in range(depth):
        block = trial.suggest_categorical(f"c{i}_block", list(space.blocks))
        kind = KINDS[block]
        width = cin if kind.residual else _suggest(trial, f"c{i}_width", space.widths)
        inner = (_suggest(trial, f"c{i}_{block}_inner", space.inner_choices(block, width))
                 if kind.has_inner else None)
        cells.append(CellConfig(block, width, inner))
        cin = cells[-1].width
    return ArchConfig(space.scale, head, tuple(cells), skip=space.skip)


def arch_params(arch: ArchConfig) -> dict[str, Any]:
    """The parameters `suggest_arch` asks for to produce ``arch`` (to enqueue it)."""
    params: dict[str, Any] = {"depth": arch.depth, "head_width": arch.head_width}
    for i, c in enumerate(arch.cells):
        params[f"c{i}_block"] = c.block
        if not KINDS[c.block].residual:
            params[f"c{i}_width"] = c.width
        if KINDS[c.block].has_inner:
            params[f"c{i}_{c.block}_inner"] = c.inner
    return params


# --- regularised evolution -------------------------------------------------------------------


def _build(space: SearchSpace, head: int, genes: list[tuple[str, int, int]]) -> ArchConfig:
    """ArchConfig from (block, width, inner) genes; a res or wide cell's width follows its
    input."""
    cells, cin = [], head
    for block, width, inner in genes:
        width = cin if KINDS[block].residual else width
        cells.append(CellConfig(block, width, inner if KINDS[block].has_inner else width))
        cin = width
    return ArchConfig(space.scale, head, tuple(cells), skip=space.skip)


def _random_gene(space: SearchSpace, rng: random.Random,
                 block: str | None = None) -> tuple[str, int, int]:
    """A random cell (of kind ``block`` if given); a res or wide cell's width is fixed later."""
    block = block or rng.choice(space.blocks)
    width = rng.choice(space.widths)
    # One draw per kind that has inner widths, in the registry's order, whichever kind is
    # picked: the random stream (and so the searches seeded before) stays as it was.
    inners = {k.name: rng.choice(k.inner_choices(space, width)) for k in KINDS.values()
              if k.has_inner}
    return block, width, inners.get(block, width)


def mutate(space: SearchSpace, arch: ArchConfig, rng: random.Random) -> ArchConfig:
    """One random edit: head width, insert/remove a cell, or one cell's kind, width or inner.

    Every edit changes the architecture when the space allows any change at all.
    """
    head = arch.head_width
    genes = [(c.block, c.width, c.inner) for c in arch.cells]
    ops = []
    if len(space.widths) > 1:
        ops.append("head")
    if arch.depth < space.max_depth:
        ops.append("insert")
    if arch.depth > space.min_depth:
        ops.append("remove")
    if len(space.blocks) > 1:
        ops.append("block")
    if any(not KINDS[g[0]].residual for g in genes) and len(space.widths) > 1:
        ops.append("width")
    if any(KINDS[g[0]].has_inner for g in genes):
        ops.append("inner")
    if not ops:
        return arch
    op = rng.choice(ops)
    if op == "head":
        head = rng.choice([w for w in space.widths if w != head])
    elif op == "insert":
        genes.insert(rng.randint(0, len(genes)), _random_gene(space, rng))
    elif op == "remove":
        del genes[rng.randrange(len(genes))]
    elif op == "block":
        i = rng.randrange(len(genes))
        block = rng.choice([b for b in space.blocks if b != genes[i][0]])
        genes[i] = _random_gene(space, rng, block)
    elif op == "width":
        i = rng.choice([j for j, g in enumerate(genes) if not KINDS[g[0]].residual])
        b, w, inner = genes[i]
        genes[i] = (b, rng.choice([v for v in space.widths if v != w]), inner)
    else:
        i = rng.choice([j for j, g in enumerate(genes) if KINDS[g[0]].has_inner])
        b, w, inner = genes[i]
        choices = space.inner_choices(b, w)
        genes[i] = (b, w, rng.choice([v for v in choices if v != inner] or [inner]))
    return _build(space, head, genes)


class RegularizedEvolution:
    """Regularised (aging) evolution of Real et al. 2019, made aware of the latency budget.

    The population is the last ``population`` feasible candidates in trial order (the oldest
    dies as a new one arrives). Until it is full, candidates are random feasible samples;
    then a tournament of ``tournament`` random members picks the parent with the highest PSNR
    and the child is one `mutate` of it. Constraint-aware: children (and samples) whose
    predicted latency exceeds the budget (or is below ``floor_ms``) are redrawn before anything
    is scored, up to ``max_tries`` times, and novel candidates are preferred to ones already
    seen. The state is the list of finished trials, so a resumed search continues exactly; the
    random stream is seeded by the number of finished trials.
    """

    def __init__(self, space: SearchSpace, predictor: LatencyPredictor, budget_ms: float,
                 population: int = 16, tournament: int = 4, seed: int = 0,
                 max_tries: int = 100, floor_ms: float = 0.0) -> None:
        self.space, self.predictor, self.budget_ms = space, predictor, budget_ms
        self.floor_ms = floor_ms
        self.population, self.tournament = population, tournament
        self.seed, self.max_tries = seed, max_tries

    def _feasible(self, arch: ArchConfig) -> bool:
        return latency_violation(self.predictor.predict(arch), self.budget_ms,
                                 self.floor_ms) <= 0

    def _draw(self, make: Callable[[], ArchConfig], seen: set[str]) -> ArchConfig | None:
        """A feasible novel candidate from ``make``, else a feasible seen one, else None."""
        fallback = None
        for _ in range(self.max_tries):
            arch = make()
            if self._feasible(arch):
                if arch.to_json() not in seen:
                    return arch
                fallback = fallback or arch
        return fallback

    def propose(self, trials: list[FrozenTrial]) -> ArchConfig:
        rng = random.Random(self.seed * 1_000_003 + len(trials))
        seen = {t.user_attrs["arch"] for t in trials if "arch" in t.user_attrs}
        alive = [(t.user_attrs["psnr"], ArchConfig.from_json(t.user_attrs["arch"]))
                 for t in trials if t.user_attrs.get("feasible")][-self.population:]
        if len(alive) < self.population:
            arch = self._draw(lambda: self.space.sample(rng), seen)
            if arch is None:  # tight budget: walk from the smallest net instead
                arch = self._draw(lambda: mutate(self.space, self.space.min_arch(), rng), seen)
            return arch or self.space.min_arch()
        contenders = rng.sample(alive, self.tournament)
        parent = max(contenders, key=lambda pa: pa[0])[1]
        return self._draw(lambda: mutate(self.space, parent, rng), seen) or parent

    def propose_params(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        return arch_params(self.propose(trials))


# --- the search ------------------------------------------------------------------------------


def make_sampler(name: str, seed: int, n_startup: int = 10) -> optuna.samplers.BaseSampler:
    """The Optuna sampler behind a stage-2 ``sampler`` name (evolution enqueues its own
    candidates, so its Optuna sampler never draws)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    if name in ("random", "evolution"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def search_architecture(
    space: SearchSpace,
    predictor: LatencyPredictor,
    evaluator: ArchEvaluator,
    cfg: Stage2Config,
    db: Path,
    *,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    progress: bool = False,
) -> Stage2Result:
    """Run (or resume) stage 2 in SQLite file ``db`` and return the best feasible candidate.

    Raises:
        UserError: the budget is below the smallest net's predicted latency, or ``db`` holds
            a search with other settings.
    """
    check_budget(space, predictor, cfg.budget_ms)
    settings = {"budget_ms": cfg.budget_ms, "sampler": cfg.sampler, "seed": cfg.seed,
                "space": repr(space), "n_startup": cfg.n_startup,
                "population": cfg.population, "tournament": cfg.tournament}
    if cfg.floor_ms:  # only when set, so that searches stored before floors resume
        settings["floor_ms"] = cfg.floor_ms
    if cfg.first:  # likewise
        settings["first"] = [a.to_json() for a in cfg.first]
    study = open_study(db, STUDY_NAME, make_sampler(cfg.sampler, cfg.seed, cfg.n_startup),
                       settings)
    if cfg.first and not study.trials:
        for arch in cfg.first:
            study.enqueue_trial(arch_params(arch))
    book = ScoreBook(study)

    def objective(trial: Trial) -> float:
        arch = suggest_arch(trial, space)
        return book.trial(trial, arch, float(predictor.predict(arch)), cfg.budget_ms,
                          lambda: evaluator.score(arch), cfg.floor_ms)

    propose = None
    if cfg.sampler == "evolution":
        evo = RegularizedEvolution(space, predictor, cfg.budget_ms, cfg.population,
                                   cfg.tournament, cfg.seed, floor_ms=cfg.floor_ms)
        propose = evo.propose_params
    stop = None
    if cfg.max_scored is not None:
        def stop() -> bool:
            return len(book) >= cfg.max_scored
    run_trials(study, objective, cfg.n_trials, propose=propose, stop=stop, on_trial=on_trial,
               progress=progress, description=f"stage 2 ({cfg.sampler})")
    return stage2_result(study)


def stage2_result(study: optuna.Study) -> Stage2Result:
    """Summarise a stage-2 study (also for a finished run read back from disk)."""
    trials = completed(study)
    best = best_trial(trials)
    if best is None:
        raise UserError("stage 2 finished without a feasible candidate; raise --trials or "
                        "--budget-ms")
    a = best.user_attrs
    return Stage2Result(
        arch=ArchConfig.from_json(a["arch"]),
        latency_ms=a["latency_ms"],
        psnr=a["psnr"],
        ssim=a["ssim"],
        **counts(trials),
        wall_s=float(study.user_attrs.get(WALL_ATTR, 0.0)),
        trials=[record(t) for t in trials],
    )

