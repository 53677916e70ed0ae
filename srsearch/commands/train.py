"""`srsearch train`: train a hand-designed model with Lightning."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srsearch.commands._common import add_data_flags, add_trainer_flags, train_config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (preset name or config JSON) with Lightning",
        description="Train an SR model: L1 loss, Adam, cosine schedule. Killed "
        "runs continue with --resume from checkpoints/last.ckpt.",
    )
    p.add_argument(
        "--arch",
        required=True,
        metavar="NAME|CONFIG.json",
        help="preset (espcn, fsrcnn, ecbsr-m4c16, ...) or a model config JSON file",
    )
    add_data_flags(p)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-patch", type=int, default=48, help="LR patch side (default 48)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default: the preset's, else 1e-3)",
    )
    p.add_argument(
        "--lr-warmup-steps",
        type=int,
        default=0,
        help="linear learning-rate warm-up over this many steps before the cosine (default 0)",
    )
    p.add_argument(
        "--val-data",
        default=None,
        metavar="SPEC",
        help="validation set (default: the val split of --data)",
    )
    p.add_argument("--val-every", type=int, default=500, help="validation period in steps")
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint period in steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    add_trainer_flags(p)
    p.set_defaults(func=run)


def model_config_from_arch(arch: str, scale: int) -> dict:
    """A preset name or a JSON config file -> config dict (scale must agree)."""
    from srsearch.common.errors import UserError
    from srsearch.models import preset_config

    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise UserError(f"--arch {arch}: no such config file")
        config = json.loads(path.read_text())
        if int(config.get("scale", scale)) != scale:
            raise UserError(f"--arch {arch} is for scale {config['scale']} but --scale is {scale}")
        return {**config, "scale": scale}
    return preset_config(arch, scale)


def run(args: argparse.Namespace) -> int:
    from srsearch.models import preset_lr
    from srsearch.train.training import train

    lr = args.lr if args.lr is not None else preset_lr(args.arch)
    cfg = train_config_from_args(args, lr)
    summary = train(model_config_from_arch(args.arch, args.scale), cfg, args.out, args.resume)
    print(
        f"trained {summary['model']['family']} for {summary['steps']} steps: "
        f"val PSNR {summary['val_psnr']:.3f} dB, SSIM {summary['val_ssim']:.4f}; "
        f"model in {args.out / 'model.pt'}"
    )
    return 0
