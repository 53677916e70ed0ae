"""The settings of a search run (`RunConfig`) and the check that a resumed run directory was
started with the same ones."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from srsearch.common.atomic import write_json
from srsearch.common.errors import UserError
from srsearch.models.subnet import REP_KINDS
from srsearch.search.rerank import INITS, POOLS
from srsearch.search.stage2 import SAMPLERS
from srsearch.search.stage3 import SAMPLERS as STAGE3_SAMPLERS

# How the latency check judges a timing: at the table's speed (read off the anchors timed beside
# it, round by round: run.at_table_speed), or as read.
CHECK_SPEEDS = ("session", "raw")

# Settings that change what a finished step holds; a resumed run must keep them.
_FIXED = ("budget_ms", "budget_floor", "overshoot", "data", "search_data", "crop", "sampler",
          "stage3_sampler", "seed", "max_ratio", "rerank", "rerank_steps", "rerank_from",
          "rerank_pool", "train_rep", "rerank_family", "check_speed")
# What a run's config.json written before a setting existed implies for it.
_BEFORE = {"overshoot": 0.0, "rerank": 0, "rerank_steps": 1000, "search_data": None,
           "rerank_from": "inherited", "rerank_pool": "best", "train_rep": "none",
           "rerank_family": 0, "check_speed": "raw"}


@dataclass(frozen=True)
class RunConfig:
    """Settings of `run_search`; each field is a ``srsearch search`` flag of the same name.

    Attributes:
        budget_ms: Latency budget on the predictor's target.
        budget_floor: Both stages consider only nets predicted at or above this fraction of
            the budget (of the largest net's latency, if that is lower): fine-tuned PSNR rises
            with MACs, so the best net sits near the budget and the floor keeps the trials
            there (docs/search.md, "Latency floor"). 0 turns it off.
        overshoot: Stage 2 searches under ``(1 + overshoot) * budget_ms`` (its floor scaled
            alike) and stage 3 must prune the choice back under ``budget_ms``; 0: stage 2
            searches under the budget and stage 3 may prune further.
        data: Data spec; its train split fine-tunes, and its val split scores candidates
            unless ``search_data`` is given.
        search_data: Data spec whose every image scores and re-ranks the candidates (and
            validates the search's trainings): images the run's results are not reported on,
            so that the choice does not flatter them (e.g. t91's last 11 when sun80's last 10
            are reported). None: the val split of ``data``.
        trials: Stage-2 finished trials in total.
        stage3_trials: Stage-3 finished trials (0: no pruning search).
        rerank: Stage 2's best this many distinct candidates are each fine-tuned
            ``rerank_steps`` steps and the best after that is kept (0 or 1: stage 2's pick;
            `srsearch.search.rerank`).
        rerank_steps: Training steps per re-ranked candidate.
        rerank_from: "inherited" (a fine-tune from the supernet's weights) or "scratch" (the
            same recipe from random initialisation: ranks as longer trainings from scratch do).
        rerank_pool: "best" (stage 2's best) or "depths" (the best of every depth in turn).
        rerank_family: This many ECBSR-style nets of the space (head C + m conv cells of C),
            those with the most MACs that the latency model puts inside stage 2's band
            (`stage2.family_twins`), are
            the first stage-2 trials and lead the re-rank's shortlist (its first
            ``rerank``), so the search weighs the net a user would scale to the budget
            against its own picks, trained alike (0: off; without a re-rank they are only
            scored by stage 2).
        train_rep: The form the re-rank's and the fine-tune's trainings run in
            (`srsearch.models.subnet.REP_KINDS`): "none" (plain convs), or "ecb" / "repvgg"
            blocks that collapse into the same plain net when training ends, so the
            delivered file and its latency are the same.
        latency_rounds: With a device to measure on: when the chosen pruned architecture,
            timed end to end and judged as ``check_speed`` says, falls outside
            ``[measured_floor x budget_ms, budget_ms]``, stages 2 and 3 run again with the
            predictor scaled by judged/predicted, up to
            this many times (`run._latency_check`); 0: no check.
        measured_floor: The lower end of that window, as a fraction of the budget.
        check_speed: "session": the check times the chosen net beside `run.ANCHOR_NETS`
            nets the table prices near it and judges its time divided by their median
            measured/predicted (the target's speed in that session), so a host whose speed
            swings within minutes does not move the choice; "raw": the time as read, for a
            target that runs persistently at another speed than its table.
        finetune_steps: Fine-tuning steps (0: keep the inherited weights).
        sampler: Stage-2 sampler (`stage2.SAMPLERS`).
        stage3_sampler: "gp" or "tpe".
        crop: LR side of the center crops the search scores on (None: whole images).
        max_ratio: Largest stage-3 pruning ratio per group.
        seed: Seed of samplers and fine-tuning.
        batch_size, lr_patch, lr: Fine-tuning batch, LR patch side and learning rate.
        distill: Fine-tuning distillation weight from the supernet's largest subnet (0: off).
        accelerator, devices: Lightning Trainer flags for fine-tuning.
    """

    budget_ms: float
    budget_floor: float = 0.85
    overshoot: float = 0.0
    data: str = "builtin"
    search_data: str | None = None
    trials: int = 200
    stage3_trials: int = 40
    rerank: int = 0
    rerank_steps: int = 1000
    rerank_from: str = "inherited"
    rerank_pool: str = "best"
    rerank_family: int = 0
    train_rep: str = "none"
    latency_rounds: int = 2
    measured_floor: float = 0.9
    check_speed: str = "session"
    finetune_steps: int = 1000
    sampler: str = "evolution"
    stage3_sampler: str = "gp"
    crop: int | None = 64
    max_ratio: float = 0.75
    seed: int = 0
    batch_size: int = 16
    lr_patch: int = 48
    lr: float = 2e-3  # chosen on builtin's val split: docs/search.md
    distill: float = 0.0
    accelerator: str = "cpu"
    devices: int | str = 1

    def __post_init__(self) -> None:
        checks = {
            "--budget-ms": (math.isfinite(self.budget_ms) and self.budget_ms > 0,
                            "a positive number of ms (not inf or nan)"),
            "--budget-floor": (0 <= self.budget_floor < 1, "in [0, 1)"),
            "--overshoot": (0 <= self.overshoot <= 1, "in [0, 1]"),
            "--trials": (self.trials >= 1, "at least 1"),
            "--stage3-trials": (self.stage3_trials >= 0, "0 or more"),
            "--rerank": (self.rerank >= 0, "0 or more"),
            "--rerank-steps": (self.rerank_steps >= 1, "at least 1"),
            "--rerank-from": (self.rerank_from in INITS, " or ".join(INITS)),
            "--rerank-pool": (self.rerank_pool in POOLS, " or ".join(POOLS)),
            "--rerank-family": (self.rerank_family >= 0, "0 or more"),
            "--train-rep": (self.train_rep in REP_KINDS, " or ".join(REP_KINDS)),
            "--latency-rounds": (self.latency_rounds >= 0, "0 or more"),
            "--measured-floor": (0 <= self.measured_floor < 1, "in [0, 1)"),
            "--check-speed": (self.check_speed in CHECK_SPEEDS, " or ".join(CHECK_SPEEDS)),
            "--finetune-steps": (self.finetune_steps >= 0, "0 or more"),
            "--sampler": (self.sampler in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
            "--stage3-sampler": (self.stage3_sampler in STAGE3_SAMPLERS,
                                 " or ".join(STAGE3_SAMPLERS)),
            "--crop": (self.crop is None or self.crop >= 16, "at least 16 (or none)"),
            "--max-ratio": (0 <= self.max_ratio < 1, "in [0, 1)"),
            "--distill": (0 <= self.distill <= 1, "in [0, 1]"),
        }
        for flag, (ok, need) in checks.items():
            if not ok:
                value = getattr(self, flag[2:].replace("-", "_"))
                raise UserError(f"{flag} {value} is invalid: it must be {need}")
        if self.overshoot > 0 and self.stage3_trials < 1:
            raise UserError(f"--overshoot {self.overshoot} needs stage 3 to prune the stage-2 "
                            "choice back into the budget: give --stage3-trials >= 1 (or "
                            "--overshoot 0)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """The settings of a run's ``config.json`` (its other keys are ignored)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def train_config(self, scale: int, steps: int | None = None, lr: float | None = None):
        """The fine-tune's `TrainConfig` (``steps``/``lr`` override; `srsearch compare` trains
        the baselines with it so that they get the same data, steps, batch, patch and seed),
        validated on the search's images (``search_data``)."""
        from srsearch.common.settings import build_config
        from srsearch.train.training import TrainConfig

        steps = steps or self.finetune_steps
        return build_config(TrainConfig, asdict(self), scale=scale, max_steps=steps,
                            lr=self.lr if lr is None else lr, val_every=steps,
                            val_data=self.search_data,
                            ckpt_every=max(1, min(100, steps)))


def _check_run_dir(out: Path, config: dict[str, Any], resume: bool) -> None:
    path = out / "config.json"
    if path.is_file():
        if not resume:
            raise UserError(f"--out {out} already holds a search run; pass --resume to continue "
                            "it or choose another --out")
        have = json.loads(path.read_text())
        diff = [k for k in (*_FIXED, "space") if have.get(k, _BEFORE.get(k)) != config.get(k)]
        if diff:
            details = "; ".join(f"{k}: {have.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise UserError(f"--resume {out}: settings differ from the run's ({details}); "
                            "resume with the same settings or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, config)
