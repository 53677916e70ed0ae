"""Optuna plumbing shared by stages 2 and 3: SQLite studies, the resumable trial loop, records.

A study lives in an SQLite file (``search.db`` in the run directory) under a fixed name per
stage. The trial loop counts *finished* (COMPLETE) trials against a total, so a search that is
killed and rerun finishes with the same number of trials as one that never stopped: trials a
crash left RUNNING are marked FAIL on restart and do not count. Constraint values go through
Optuna 5's ``trial.set_constraint`` (feasible when <= 0), which TPE and GP samplers read.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from srsearch.common.errors import UserError
from srsearch.search.evaluator import Score
from supernet.space import ArchConfig

WALL_ATTR = "wall_s"  # study user attr: seconds spent in the trial loop, summed over (re)starts
INFEASIBLE_VALUE = 0.0  # objective value reported for infeasible trials (never scored)


def latency_violation(latency_ms: float, budget_ms: float, floor_ms: float = 0.0) -> float:
    """How far ``latency_ms`` lies outside ``[floor_ms, budget_ms]`` (<= 0: feasible); the
    Optuna constraint value of a trial, and the one feasibility rule of both stages."""
    return max(latency_ms - budget_ms, floor_ms - latency_ms)


def quiet_optuna() -> None:
    """Optuna logs one INFO line per trial; the search shows its own progress instead."""
    optuna.logging.set_verbosity(logging.WARNING)


def open_study(db: Path, name: str, sampler: optuna.samplers.BaseSampler,
               config: dict[str, Any]) -> optuna.Study:
    """Create or load study ``name`` in SQLite file ``db`` (maximising PSNR).

    ``config`` is stored with a new study; a loaded study must have been made with the same one
    (budget, space, sampler, ...), else resuming would mix two searches.
    """
    quiet_optuna()
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=_storage(db), study_name=name, sampler=sampler,
                                direction="maximize", load_if_exists=True)
    want = json.loads(json.dumps(config))
    have = study.user_attrs.get("config")
    if have is None:
        study.set_user_attr("config", want)
    elif have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        details = "; ".join(f"{k}: stored {have.get(k)!r}, now {want.get(k)!r}" for k in diff)
        raise UserError(f"{db} holds a {name} search with other settings ({details}); resume "
                        "with the same settings or choose another --out")
    return study


def load_study(db: Path, name: str) -> optuna.Study | None:
    """Study ``name`` of SQLite file ``db``, or None when the file or the study is missing."""
    quiet_optuna()
    db = Path(db)
    if not db.is_file():
        return None
    storage = _storage(db)
    if name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def _storage(db: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}",
                                      engine_kwargs={"creator": lambda: _connect(db)})


def _connect(db: Path) -> sqlite3.Connection:
    """SQLite in WAL mode with synchronous=NORMAL: a commit no longer waits for the disk (a
    trial writes ~20 small commits; with the default rollback journal each is an fsync, ~10 ms
    on this host), and the file still survives a killed process intact."""
    con = sqlite3.connect(db.resolve(), timeout=60)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def fail_stale(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAIL; returns how many."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return len(stale)


def run_trials(
    study: optuna.Study,
    objective: Callable[[Trial], float],
    n_trials: int,
    *,
    propose: Callable[[list[FrozenTrial]], dict[str, Any]] | None = None,
    stop: Callable[[], bool] | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    progress: bool = False,
    description: str = "search",
) -> None:
    """Run trials until the study holds ``n_trials`` COMPLETE ones (or ``stop()`` is true).

    Args:
        propose: For samplers outside Optuna (evolution): given the finished trials, the
            params of the next candidate, which is enqueued and then asked for. A candidate
            enqueued before a crash is asked for first.
        on_trial: Called with each finished trial (to write results as they come).
        progress: Show a rich progress bar with the best feasible PSNR so far.
    """
    fail_stale(study)
    finished = completed(study)
    best = best_trial(finished)
    done = len(finished)
    bar = _Progress(description, n_trials, done, best and best.value, enabled=progress)
    with bar:
        while done < n_trials and not (stop and stop()):
            t0 = time.perf_counter()
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if propose is not None and not waiting:
                study.enqueue_trial(propose(completed(study)))
            trial = study.ask()
            try:
                value = objective(trial)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            frozen = study.tell(trial, value)
            study.set_user_attr(WALL_ATTR, study.user_attrs.get(WALL_ATTR, 0.0)
                                + time.perf_counter() - t0)
            done += 1
            if frozen.user_attrs.get("feasible"):
                bar.best = max(bar.best, frozen.value) if bar.best is not None else frozen.value
            bar.advance()
            if on_trial is not None:
                on_trial(frozen)


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials in trial order."""
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: t.number)


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The feasible trial with the highest PSNR; ties go to the lower latency, then the
    earlier trial."""
    feasible = [t for t in trials if t.user_attrs.get("feasible")]
    if not feasible:
        return None
    return max(feasible, key=lambda t: (t.value, -t.user_attrs["latency_ms"], -t.number))


class ScoreBook:
    """Scores of one study's candidates by architecture JSON, seeded from its finished trials
    (so a resumed search scores nothing twice), and the bookkeeping of a constrained trial."""

    def __init__(self, study: optuna.Study) -> None:
        self.known: dict[str, Score] = {
            t.user_attrs["arch"]: Score(t.user_attrs["psnr"], t.user_attrs["ssim"])
            for t in completed(study) if t.user_attrs.get("feasible")}

    def __len__(self) -> int:
        return len(self.known)

    def trial(self, trial: Trial, arch: ArchConfig, latency_ms: float, budget_ms: float,
              score: Callable[[], Score], floor_ms: float = 0.0) -> float:
        """Record ``arch``'s latency and constraint on ``trial``; when feasible (``floor_ms <=
        latency_ms <= budget_ms``), its score (``score()`` only for an architecture not scored
        before). Returns the trial's value."""
        key = arch.to_json()
        trial.set_user_attr("arch", key)
        trial.set_user_attr("latency_ms", latency_ms)
        violation = latency_violation(latency_ms, budget_ms, floor_ms)
        trial.set_constraint("latency", violation)
        feasible = violation <= 0
        trial.set_user_attr("feasible", feasible)
        if not feasible:
            return INFEASIBLE_VALUE
        scored = key not in self.known
        if scored:
            self.known[key] = score()
        trial.set_user_attr("scored", scored)
        trial.set_user_attr("psnr", self.known[key].psnr)
        trial.set_user_attr("ssim", self.known[key].ssim)
        return self.known[key].psnr


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """n_trials, n_feasible and n_scored (distinct candidates scored) of finished trials."""
    return {"n_trials": len(trials),
            "n_feasible": sum(1 for t in trials if t.user_attrs.get("feasible")),
            "n_scored": sum(1 for t in trials if t.user_attrs.get("scored"))}


def record(t: FrozenTrial) -> dict[str, Any]:
    """One finished trial as a flat dict (the rows of trials.csv)."""
    a = t.user_attrs
    return {
        "number": t.number,
        "feasible": bool(a.get("feasible")),
        "latency_ms": a.get("latency_ms"),
        "psnr": a.get("psnr"),
        "ssim": a.get("ssim"),
        "scored": bool(a.get("scored")),
        "arch": a.get("arch"),
    }


class _Progress:
    """A rich bar over trials, or nothing."""

    def __init__(self, description: str, total: int, done: int, best: float | None,
                 enabled: bool) -> None:
        self.description, self.total, self.done, self.best = description, total, done, best
        self.enabled = enabled
        self._progress = self._task = None

    def _text(self) -> str:
        best = "-" if self.best is None else f"{self.best:.3f} dB"
        return f"{self.description} (best {best})"

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console

            from srsearch.common.progress import bar_progress

            self._progress = bar_progress(Console(stderr=True))
            self._progress.start()
            self._task = self._progress.add_task(self._text(), total=self.total,
                                                 completed=self.done)
        return self

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=self._text())

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
