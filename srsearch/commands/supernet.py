"""`srsearch supernet`: stage 1, train the weight-sharing supernet."""

from __future__ import annotations

import argparse
from pathlib import Path

from srsearch.commands._common import add_data_flags, add_trainer_flags, train_config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "supernet",
        help="stage 1: train the weight-sharing supernet",
        description="Sandwich rule (largest, smallest and k random subnets every "
        "step, k-deep of them at full depth) with in-place distillation from the largest. Writes "
        "OUT/supernet.pt; killed runs continue with --resume.",
    )
    add_data_flags(p)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-patch", type=int, default=32, help="LR patch side (default 32)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--k-random", type=int, default=2, help="random subnets per step")
    p.add_argument(
        "--k-deep",
        type=int,
        default=1,
        help="how many of the random subnets are drawn at full depth (default 1)",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=0.5,
        help="weight of the largest subnet's output in the students' target (0..1)",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="steps of largest-only training before the channel reorder "
        "(default: 10%% of --max-steps)",
    )
    p.add_argument("--max-width", type=int, default=32, help="widest layer of the search space")
    p.add_argument("--max-depth", type=int, default=8, help="most cells of the search space")
    p.add_argument("--skip", choices=("nearest", "bicubic"), default=None,
                   help="global LR skip of every net of the space (default: "
                   "supernet.space.DEFAULT_SKIP, bicubic; docs/search_space.md)")
    p.add_argument("--val-data", default=None, metavar="SPEC")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--resume", action="store_true")
    add_trainer_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.train.supernet_training import train_supernet
    from supernet.space import make_space

    cfg = train_config_from_args(args, args.lr)
    space = make_space(args.scale, args.max_width, args.max_depth, skip=args.skip)
    summary = train_supernet(
        space,
        cfg,
        args.out,
        resume=args.resume,
        k_random=args.k_random,
        k_deep=args.k_deep,
        distill=args.distill,
        warmup_steps=args.warmup_steps,
    )
    print(
        f"supernet trained for {summary['steps']} steps: val PSNR largest "
        f"{summary.get('val/psnr_max', float('nan')):.3f} dB, smallest "
        f"{summary.get('val/psnr_min', float('nan')):.3f} dB; {args.out / 'supernet.pt'}"
    )
    return 0
