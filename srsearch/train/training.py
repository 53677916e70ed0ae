"""Lightning training of SR models: L1 loss, Adam, cosine schedule, Y-PSNR/SSIM validation.

``train()`` is what ``srsearch train`` runs. A run directory holds ``checkpoints/last.ckpt``
(written every ``ckpt_every`` steps, so a killed run resumes from there), ``logs/version_N``
(CSV and TensorBoard, a new version per resume so no earlier log is overwritten), and, when the run
finishes, ``model.pt`` (config + state dict) and ``metrics.json``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from srsearch.common import atomic
from srsearch.common.errors import UserError
from srsearch.evaluation.metrics import score_sr


@dataclass(frozen=True)
class TrainConfig:
    """What one training run does. Each field is a ``srsearch train`` flag of the same name."""

    data: str = "builtin"  # dataset spec for training (and validation unless val_data is set)
    scale: int = 2  # upscaling factor: 2, 3 or 4
    max_steps: int = 3000  # optimiser steps
    batch_size: int = 16  # LR patches per step
    lr_patch: int = 48  # LR patch side; the HR patch is lr_patch * scale
    lr: float = 1e-3  # Adam learning rate, cosine-annealed to lr * 0.01
    lr_warmup_steps: int = 0  # linear warm-up from lr / lr_warmup_steps to lr over this many steps
    val_data: str | None = None  # dataset spec for validation (default: the val split of data)
    val_every: int = 500  # validate every this many steps (and at the end)
    ckpt_every: int = 100  # write checkpoints/last.ckpt every this many steps
    seed: int = 0
    accelerator: str = "cpu"  # passed to the Lightning Trainer, as are the next four
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored with the run

    def __post_init__(self) -> None:
        checks = {
            "--scale": (self.scale in (2, 3, 4), "2, 3 or 4"),
            "--max-steps": (self.max_steps >= 1, "at least 1"),
            "--batch-size": (self.batch_size >= 1, "at least 1"),
            "--lr-patch": (self.lr_patch >= 4, "at least 4"),
            "--lr": (self.lr > 0, "positive"),
            "--lr-warmup-steps": (0 <= self.lr_warmup_steps < self.max_steps,
                               f"at least 0 and below --max-steps ({self.max_steps})"),
            "--val-every": (self.val_every >= 1, "at least 1"),
            "--ckpt-every": (self.ckpt_every >= 1, "at least 1"),
        }
        for flag, (ok, need) in checks.items():
            if not ok:
                value = getattr(self, flag[2:].replace("-", "_"))
                raise UserError(f"{flag} {value} is invalid: it must be {need}")


def lr_factor(step: int, max_steps: int, lr_warmup_steps: int = 0) -> float:
    """The learning rate at ``step`` as a fraction of the peak: linear from
    ``1 / lr_warmup_steps`` to 1 over the warm-up, then cosine-annealed to 0.01 at ``max_steps``.
    With no warm-up it is ``CosineAnnealingLR(T_max=max_steps, eta_min=0.01 * lr)`` exactly."""
    if step < lr_warmup_steps:
        return (step + 1) / lr_warmup_steps
    span = max(1, max_steps - lr_warmup_steps)
    t = min(step - lr_warmup_steps, span) / span
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def adam_cosine(params: Any, lr: float, max_steps: int,
                lr_warmup_steps: int = 0) -> dict[str, Any]:
    """The optimiser setup every training here shares (models, supernet, fine-tune): Adam at
    ``lr``, cosine-annealed per step to ``lr * 0.01`` over ``max_steps``, after an optional
    linear warm-up of ``lr_warmup_steps`` (``lr_factor``)."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, max_steps, lr_warmup_steps)
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def distill_loss(sr: torch.Tensor, hr: torch.Tensor, teacher: torch.Tensor,
                 a: float) -> torch.Tensor:
    """``(1 - a) * L1(sr, hr) + a * L1(sr, teacher)``: the student learns from the HR target and
    the teacher's output (stage 1's in-place distillation and the fine-tune's ``--distill``)."""
    return (1 - a) * F.l1_loss(sr, hr) + a * F.l1_loss(sr, teacher)


class SRModule(L.LightningModule):
    """Wraps any registered SR model (given as its config dict) for Lightning."""

    def __init__(self, model_config: dict[str, Any], lr: float = 1e-3, max_steps: int = 1000,
                 lr_warmup_steps: int = 0):
        super().__init__()
        self.save_hyperparameters()
        from srsearch.models import build_model

        self.model = build_model(model_config)
        self.scale = int(model_config["scale"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        lr, hr = batch[0], batch[1]
        sr = self(lr)
        loss = F.l1_loss(sr, hr)
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True)
            return loss
        psnr, ssim = zip(*(score_sr(sr[i], hr[i], self.scale) for i in range(sr.shape[0])),
                         strict=True)
        n = len(psnr)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=n)
        self.log(f"{stage}/psnr", sum(psnr) / n, prog_bar=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/ssim", sum(ssim) / n, sync_dist=True, batch_size=n)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> Any:
        return adam_cosine(self.model.parameters(), self.hparams.lr, self.hparams.max_steps,
                           self.hparams.get("lr_warmup_steps", 0))


class SRDataModule(L.LightningDataModule):
    """Random aligned patches for training, whole images for validation."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def setup(self, stage: str | None = None) -> None:
        from srsearch.data.datasets import load_images
        from srsearch.data.patches import FullImageDataset, PatchDataset

        cfg = self.cfg
        train_images = load_images(cfg.data, cfg.scale, "train")
        val_images = load_images(cfg.val_data or cfg.data, cfg.scale,
                                 "all" if cfg.val_data else "val")
        # One epoch = one validation period.
        self.train_set = PatchDataset(train_images, cfg.scale, cfg.lr_patch,
                                      length=cfg.batch_size * cfg.val_every, seed=cfg.seed)
        self.val_set = FullImageDataset(val_images)

    def train_dataloader(self) -> DataLoader:
        """Patches as a function of the global step (`StepSampler`): a run resumed from a
        mid-epoch checkpoint continues the data order instead of replaying the epoch."""
        from srsearch.data.patches import StepSampler

        trainer = self.trainer
        sampler = StepSampler(
            self.cfg.batch_size,
            self.cfg.val_every,
            (lambda: trainer.global_step) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world=trainer.world_size if trainer is not None else 1,
        )
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=0, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=0)


def progress_bar() -> TQDMProgressBar:
    """A bar that redraws in a terminal and prints a line every 50 steps in a log file."""
    return TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 50)


def last_checkpoint(out: Path) -> Path | None:
    ckpt = Path(out) / "checkpoints" / "last.ckpt"
    return ckpt if ckpt.is_file() else None


def resume_checkpoint(out: Path) -> Path | None:
    """``out``'s last checkpoint, checked to load with ``weights_only=True`` (a crafted file is
    refused with a `UserError` before any work starts), or None when there is none."""
    from srsearch.models.modelio import load_weights_only

    ckpt = last_checkpoint(out)
    if ckpt is not None:
        state = load_weights_only(ckpt, "checkpoint")
        if not isinstance(state, dict) or "state_dict" not in state:
            raise UserError(f"checkpoint {ckpt} is not a Lightning checkpoint of srsearch; "
                            f"delete it to start from step 0, or choose another --out")
    return ckpt


def fit(trainer: L.Trainer, module: L.LightningModule, data: L.LightningDataModule,
        ckpt_path: Path | None) -> None:
    """``trainer.fit`` resuming from ``ckpt_path`` with ``weights_only=True`` where Lightning
    takes the argument (2.5+; before, torch's own default, True since torch 2.6, applies).
    Pass a ``ckpt_path`` from `resume_checkpoint`, which has checked the file already."""
    kwargs = {"weights_only": True} if _fit_takes_weights_only() else {}
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, **kwargs)


def _fit_takes_weights_only() -> bool:
    import inspect

    return "weights_only" in inspect.signature(L.Trainer.fit).parameters


def check_out_dir(out: Path, resume: bool, final: str = "model.pt") -> Path | None:
    """The checkpoint to resume from (checked by `resume_checkpoint`), or None; refuses to
    overwrite an earlier run (one with a checkpoint or its ``final`` output file)."""
    ckpt = resume_checkpoint(out) if resume else last_checkpoint(out)
    if resume:
        # Said only when there is something there (besides the run folder's .lock): the
        # pipeline and compare resume every training they start, and a fresh one is not news.
        there = Path(out).is_dir() and any(not p.name.startswith(".") for p in Path(out).iterdir())
        if ckpt is None and there:
            print(f"--resume: no checkpoint in {out}/checkpoints yet; starting from step 0",
                  file=sys.stderr)
        return ckpt
    if ckpt is not None or (Path(out) / final).exists():
        raise UserError(f"--out {out} already holds a run; pass --resume to continue it or "
                        "choose another --out")
    return None


def make_trainer(cfg: TrainConfig, out: Path, callbacks: list | None = None) -> L.Trainer:
    """The Trainer shared by ``srsearch train`` and ``srsearch supernet``."""
    out = Path(out)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:06d}",
                           auto_insert_metric_name=False, every_n_train_steps=cfg.ckpt_every,
                           save_last=True, save_top_k=1)
    # One version folder per (re)start, shared by both loggers: CSVLogger deletes an existing
    # metrics.csv in its folder, so a resumed run must never log into an earlier one.
    logs = out / "logs"
    version = len(list(logs.glob("version_*"))) if logs.is_dir() else 0
    loggers = [CSVLogger(out, name="logs", version=version),
               TensorBoardLogger(out, name="logs", version=version)]
    return L.Trainer(
        max_steps=cfg.max_steps,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        num_nodes=cfg.num_nodes,
        logger=loggers,
        callbacks=[ckpt, progress_bar(), *(callbacks or [])],
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=min(50, cfg.val_every),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        use_distributed_sampler=False,  # SRDataModule's StepSampler splits the ranks itself
    )


def train(model_config: dict[str, Any], cfg: TrainConfig, out: Path, resume: bool = False,
          init_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train ``model_config`` as ``cfg`` says into run directory ``out``; returns the summary.

    ``init_state`` starts from given weights (e.g. a subnet's inherited supernet weights) instead
    of a random init; a resumed run takes its weights from the checkpoint instead.
    """
    from srsearch.common.rundir_lock import run_dir_lock

    with run_dir_lock(Path(out)) as out:
        return _train(model_config, cfg, out, resume, init_state)


def _train(model_config: dict[str, Any], cfg: TrainConfig, out: Path, resume: bool,
           init_state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    from srsearch.models.modelio import save_model

    ckpt_path = check_out_dir(out, resume)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SRModule(model_config, lr=cfg.lr, max_steps=cfg.max_steps,
                      lr_warmup_steps=cfg.lr_warmup_steps)
    if init_state is not None:
        module.model.load_state_dict(init_state)
    data = SRDataModule(cfg)
    trainer = make_trainer(cfg, out)
    atomic.write_json(out / "train_config.json", {"model": model_config, "train": asdict(cfg)})
    fit(trainer, module, data, ckpt_path)
    summary = {
        "model": model_config,
        "steps": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        "val_psnr": _metric(trainer, "val/psnr"),
        "val_ssim": _metric(trainer, "val/ssim"),
        "params": sum(p.numel() for p in module.model.parameters()),
    }
    if trainer.is_global_zero:
        save_model(module.model, out / "model.pt", extra={"train": asdict(cfg), **summary})
        atomic.write_json(out / "metrics.json", summary)  # compare's "trained" marker
    return summary


def _metric(trainer: L.Trainer, name: str) -> float:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else math.nan
