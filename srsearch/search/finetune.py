"""Fine-tune the compact (pruned) model with Lightning, starting from its inherited weights.

Reuses `srsearch.train.training`: the same `SRModule` (L1 loss, Adam, cosine schedule, Y-PSNR/SSIM
validation), `SRDataModule` and `make_trainer`, so a fine-tune run directory looks like any
training run (``checkpoints/last.ckpt``, ``logs/``) and a killed fine-tune resumes from its
last checkpoint.

Optional distillation (``distill = a > 0``): the loss is ``(1 - a) * L1(sr, hr) + a * L1(sr,
teacher(lr))``, the teacher being the supernet's largest subnet (frozen), as in stage 1's
in-place distillation.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from srsearch.common import atomic
from srsearch.train.training import (
    SRDataModule,
    SRModule,
    TrainConfig,
    distill_loss,
    fit,
    make_trainer,
    resume_checkpoint,
)
from supernet.subnet import SubNet


class FinetuneModule(SRModule):
    """`SRModule` plus an optional frozen teacher for distillation."""

    def __init__(self, model_config: dict[str, Any], lr: float = 1e-4, max_steps: int = 1000,
                 teacher_config: dict[str, Any] | None = None, distill: float = 0.0) -> None:
        super().__init__(model_config, lr=lr, max_steps=max_steps)
        self.save_hyperparameters()
        self.teacher = None
        if teacher_config is not None and distill > 0:
            from srsearch.models import build_model

            self.teacher = build_model(teacher_config).eval().requires_grad_(False)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.teacher is None:
            return super().training_step(batch, batch_idx)
        lr, hr = batch[0], batch[1]
        sr = self(lr)
        with torch.no_grad():
            target = self.teacher.eval()(lr)
        a = self.hparams.distill
        loss = distill_loss(sr, hr, target, a)
        self.log("train/loss", loss, prog_bar=True)
        return loss


def finetune(model: SubNet, cfg: TrainConfig, out: Path, *, teacher: SubNet | None = None,
             distill: float = 0.0) -> tuple[SubNet, dict[str, Any]]:
    """Fine-tune ``model`` (not modified) for ``cfg.max_steps`` steps in run directory
    ``out``; resumes from ``out/checkpoints/last.ckpt`` when present.

    Returns:
        (the fine-tuned model in eval mode, summary with steps and validation PSNR/SSIM).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = resume_checkpoint(out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = FinetuneModule(model.config(), lr=cfg.lr, max_steps=cfg.max_steps,
                            teacher_config=teacher.config() if teacher is not None else None,
                            distill=distill)
    module.model.load_state_dict(model.state_dict())
    if module.teacher is not None:
        module.teacher.load_state_dict(teacher.state_dict())
    atomic.write_json(out / "train_config.json", {
        "model": model.config(), "train": asdict(cfg), "distill": distill,
        "teacher": teacher.config() if teacher is not None else None})
    trainer = make_trainer(cfg, out)
    fit(trainer, module, SRDataModule(cfg), ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary = {"steps": int(trainer.global_step), "val_psnr": metrics.get("val/psnr"),
               "val_ssim": metrics.get("val/ssim")}
    return module.model.eval(), summary
