"""Training several models into one folder: one run directory per model (and seed), each
skipped when finished and resumed when interrupted. Used by `srsearch compare` and the
pipeline's baseline stage."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srsearch.common.errors import UserError


@dataclass(frozen=True)
class TrainJob:
    """One training run: a model config, its `TrainConfig`, and optionally a function giving
    its initial weights (inherited ones; None: random initialisation)."""

    model: dict[str, Any]
    train: Any
    init: Callable[[], dict[str, Any]] | None = None


def train_models(
    jobs: Mapping[str, TrainJob], out_dir: Path, log: Callable[[str], None] = print,
    skip_busy: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train each job into ``out_dir/<name>``; a finished one is skipped and an interrupted one
    resumes from its last checkpoint.

    With ``skip_busy``, a job whose directory another process is training is left to it (and
    missing from the result), so that several processes given the same jobs share them out.
    """
    from srsearch.common.rundir_lock import Busy, run_dir_lock
    from srsearch.train.training import last_checkpoint, train

    results = {}
    for name, job in jobs.items():  # every mismatch is named before any training starts
        check_same_job(Path(out_dir) / name, job)
    for i, (name, job) in enumerate(jobs.items(), 1):
        out = Path(out_dir) / name
        if _finished(out):
            results[name] = json.loads((out / "metrics.json").read_text())
            log(f"training {i}/{len(jobs)} {name}: trained (skipped)")
            continue
        try:
            with run_dir_lock(out):
                if _finished(out):  # another process finished it meanwhile
                    results[name] = json.loads((out / "metrics.json").read_text())
                    continue
                log(f"training {i}/{len(jobs)} {name}: {job.train.max_steps} steps, seed "
                    f"{job.train.seed} -> {out}")
                init = (job.init() if job.init is not None and last_checkpoint(out) is None
                        else None)
                results[name] = train(job.model, job.train, out, resume=True, init_state=init)
        except Busy:
            if not skip_busy:
                raise
            log(f"training {i}/{len(jobs)} {name}: another process is training it (left to it)")
    return results


# The TrainConfig fields that decide the weights a run ends with (not where or how it logs).
RECIPE_FIELDS = ("data", "scale", "max_steps", "batch_size", "lr_patch", "lr",
                 "lr_warmup_steps", "seed")


def check_same_job(out: Path, job: TrainJob) -> None:
    """Refuse a folder that holds a training of another model or recipe than ``job``: it would
    be skipped as finished (or resumed) and reported as ``job``'s. Session 12 found that a
    compare rerun with another ``--rep`` reported the earlier form's trainings."""
    saved_file = out / "train_config.json"
    if not saved_file.is_file():
        return
    from dataclasses import fields

    from srsearch.train.training import TrainConfig

    saved = json.loads(saved_file.read_text())
    # a field added since that run was written held its default then
    saved_train = {**{f.name: f.default for f in fields(TrainConfig)}, **saved.get("train", {})}
    want_model = json.loads(json.dumps(job.model))
    want_train = json.loads(json.dumps({k: getattr(job.train, k) for k in RECIPE_FIELDS}))
    diff = [k for k in RECIPE_FIELDS if saved_train.get(k) != want_train[k]]
    if saved.get("model") != want_model:
        diff.insert(0, "model")
    if diff:
        raise UserError(
            f"{out} holds a training with another {', '.join(diff)} than this run asks "
            f"(saved model {saved.get('model')}); choose another --out, or delete {out} to "
            "train it again"
        )


def _finished(out: Path) -> bool:
    """A run folder `train` completed: its model and its metrics (written last) are there."""
    return (out / "model.pt").is_file() and (out / "metrics.json").is_file()


def check_presets(names: Sequence[str]) -> None:
    from srsearch.models import presets

    unknown = [n for n in names if n not in presets() or n == "bicubic"]
    if unknown:
        raise UserError(
            f"--baselines: unknown {unknown}; trainable presets: "
            f"{', '.join(p for p in presets() if p != 'bicubic')}"
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
    from srsearch.models import preset_config, preset_lr

    check_presets(names)
    jobs = {n: TrainJob(preset_config(n, scale), make_cfg(preset_lr(n))) for n in names}
    return train_models(jobs, out_dir, lambda m: log(m.replace("training", "baseline", 1)))


def seed_name(name: str, index: int, seed: int) -> str:
    """Run directory / model name of a row's ``index``-th seed (the first keeps the name)."""
    return name if index == 0 else f"{name}-seed{seed}"
