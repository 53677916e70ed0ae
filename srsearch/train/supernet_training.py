"""Stage 1: train the weight-sharing supernet with Lightning (``srsearch supernet``).

It lives with the other training code (`srsearch.train.training`: data module, Trainer, resume
checks, optimiser setup) so that ``supernet/`` stays model code that imports nothing from srsearch.

Every step follows the sandwich rule: the largest subnet learns from the HR target, and the
smallest plus ``k_random`` random subnets learn from a mix of the HR target and the largest
subnet's output (in-place distillation, weight ``distill``). All losses are summed into one
backward pass, so one optimiser step updates the shared weights once.

``k_deep`` of the random subnets are drawn at full depth (kinds and widths still random). The
largest subnet trains every position's res cell every step, but a conv or wide cell at the
last position is in a uniform sample only 1 time in 3 x 8; without the deep draws those cells
stayed near their initialisation and deep subnets scored far below what they fine-tune to.

Before elastic training starts, ``warmup_steps`` steps train the largest subnet alone; then the
channels are reordered once by importance (``SuperNet.reorder_channels``, function unchanged)
and the optimiser state is reset, so that narrow subnets start from the most important channels.
Reordering is not repeated later: after sandwich training, a narrow subnet's channels are
co-adapted as a prefix, and a new order would break that.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from srsearch.common import atomic
from srsearch.common.errors import UserError
from srsearch.common.rundir_lock import run_dir_lock
from srsearch.evaluation.metrics import score_sr, tensor_to_uint8
from srsearch.models.modelio import load_weights_only
from srsearch.train.training import (
    SRDataModule,
    adam_cosine,
    check_out_dir,
    distill_loss,
    fit,
    make_trainer,
)
from supernet.network import SuperNet
from supernet.space import ArchConfig, SearchSpace, space_from_dict, space_to_dict

__all__ = ["SupernetModule", "load_supernet", "save_supernet", "space_from_dict",
           "space_to_dict", "train_supernet", "val_archs"]

FORMAT = "srsearch.supernet/1"


def val_archs(space: SearchSpace, n: int = 3, seed: int = 1234) -> list[tuple[str, ArchConfig]]:
    """The subnets validation reports: largest, smallest and ``n`` fixed random ones."""
    rng = random.Random(seed)
    archs = [("max", space.max_arch()), ("min", space.min_arch())]
    return archs + [(f"rand{i}", space.sample(rng)) for i in range(n)]


class SupernetModule(L.LightningModule):
    """The supernet under the sandwich rule with in-place distillation."""

    def __init__(
        self,
        space: dict[str, Any],
        lr: float = 1e-3,
        max_steps: int = 3000,
        k_random: int = 2,
        distill: float = 0.5,
        warmup_steps: int = 300,
        seed: int = 0,
        k_deep: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.space = space_from_dict(space)
        self.supernet = SuperNet(self.space)
        self.scale = self.space.scale
        self._val_archs = val_archs(self.space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x)

    def _rng(self) -> random.Random:
        # Same subnets on every DDP rank (weights stay in sync), new ones each step.
        return random.Random(self.hparams.seed * 1_000_003 + self.global_step)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.global_step == self.hparams.warmup_steps and self.hparams.warmup_steps > 0:
            self.supernet.reorder_channels()
            self.optimizers().optimizer.state.clear()  # moments belong to the old order

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        lr, hr = batch[0], batch[1]
        self.supernet.set_active_subnet(self.supernet.max_arch())
        teacher = self.supernet(lr)
        loss = F.l1_loss(teacher, hr)
        self.log("train/loss_max", loss, prog_bar=True)
        if self.global_step < self.hparams.warmup_steps:
            return loss
        rng = self._rng()
        students = [self.supernet.min_arch()]
        k, deep = self.hparams.k_random, min(self.hparams.k_deep, self.hparams.k_random)
        students += [self.space.sample(rng) for _ in range(k - deep)]
        students += [self.space.sample(rng, depth=self.space.max_depth) for _ in range(deep)]
        target = teacher.detach()
        a = self.hparams.distill
        for arch in students:
            self.supernet.set_active_subnet(arch)
            loss = loss + distill_loss(self.supernet(lr), hr, target, a)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        lr, hr = batch[0], batch[1]
        ref = tensor_to_uint8(hr[0])
        psnrs = []
        for name, arch in self._val_archs:
            self.supernet.set_active_subnet(arch)
            psnr, _ = score_sr(self.supernet(lr)[0], ref, self.scale, ssim=False)
            psnrs.append(psnr)
            self.log(
                f"val/psnr_{name}",
                psnr,
                sync_dist=True,
                batch_size=1,
                prog_bar=name in ("max", "min"),
            )
        self.log("val/psnr", sum(psnrs) / len(psnrs), sync_dist=True, batch_size=1)

    def configure_optimizers(self) -> Any:
        return adam_cosine(self.supernet.parameters(), self.hparams.lr, self.hparams.max_steps)


def save_supernet(net: SuperNet, path: Path, extra: dict[str, Any] | None = None) -> Path:
    """``{"format", "space", "state_dict", "extra"}``; loads with ``weights_only=True``."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "space": json.dumps(space_to_dict(net.space)),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_supernet(path: Path) -> SuperNet:
    """A trained supernet from ``supernet.pt``, a run directory, or a Lightning checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / "supernet.pt"
    if not path.is_file():
        raise UserError(f"supernet {path} does not exist; train one with `srsearch supernet`")
    payload = load_weights_only(path, "supernet")
    if not isinstance(payload, dict):
        raise UserError(f"{path} is not an srsearch supernet file ({FORMAT}) or checkpoint")
    try:
        if path.suffix == ".ckpt":  # a Lightning checkpoint of `srsearch supernet`
            space = space_from_dict(payload["hyper_parameters"]["space"])
            state = {k.removeprefix("supernet."): v for k, v in payload["state_dict"].items()}
        elif payload.get("format") == FORMAT:
            space, state = space_from_dict(json.loads(payload["space"])), payload["state_dict"]
        else:
            raise KeyError("format")
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is not an srsearch supernet file ({FORMAT}) or a checkpoint "
                        "of `srsearch supernet`; train one with `srsearch supernet`") from None
    net = SuperNet(space)
    net.load_state_dict(state)
    return net.eval()


def train_supernet(
    space: SearchSpace,
    cfg: Any,
    out: Path,
    *,
    resume: bool = False,
    k_random: int = 2,
    k_deep: int = 1,
    distill: float = 0.5,
    warmup_steps: int | None = None,
) -> dict[str, Any]:
    """Run stage 1 into ``out``; ``cfg`` is a :class:`srsearch.train.training.TrainConfig`.

    ``k_random``, ``k_deep`` and ``distill`` are checked here, where they are used (before
    anything is written), for the CLI and the pipeline alike.
    """
    if not 0.0 <= distill <= 1.0:
        raise UserError(f"--distill {distill} must be between 0 and 1")
    if k_random < 0:
        raise UserError(f"--k-random {k_random} must be >= 0")
    if not 0 <= k_deep <= k_random:
        raise UserError(f"--k-deep {k_deep} must be between 0 and --k-random ({k_random})")
    if cfg.strategy == "ddp":
        # Each step touches only some block types and widths: DDP must expect unused weights.
        cfg = replace(cfg, strategy="ddp_find_unused_parameters_true")
    with run_dir_lock(Path(out)) as out:
        return _train_supernet(space, cfg, out, resume, k_random, k_deep, distill, warmup_steps)


def _train_supernet(space: SearchSpace, cfg: Any, out: Path, resume: bool, k_random: int,
                    k_deep: int, distill: float, warmup_steps: int | None) -> dict[str, Any]:
    ckpt_path = check_out_dir(out, resume, final="supernet.pt")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    warmup = cfg.max_steps // 10 if warmup_steps is None else warmup_steps
    module = SupernetModule(
        space_to_dict(space),
        lr=cfg.lr,
        max_steps=cfg.max_steps,
        k_random=k_random,
        distill=distill,
        warmup_steps=warmup,
        seed=cfg.seed,
        k_deep=k_deep,
    )
    trainer = make_trainer(cfg, out)
    atomic.write_json(
        out / "train_config.json",
        {
            "space": space_to_dict(space),
            "train": asdict(cfg),
            "k_random": k_random,
            "k_deep": k_deep,
            "distill": distill,
            "warmup_steps": warmup,
        },
    )
    fit(trainer, module, SRDataModule(cfg), ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    summary = {
        "steps": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        **{k: metrics.get(k, math.nan) for k in sorted(metrics)},
    }
    if trainer.is_global_zero:
        save_supernet(module.supernet, out / "supernet.pt", extra=summary)
        atomic.write_json(out / "metrics.json", summary)
    return summary
