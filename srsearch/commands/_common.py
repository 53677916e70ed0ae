"""Flags that several commands share, defined once."""

from __future__ import annotations

import argparse


def add_data_flags(p: argparse.ArgumentParser, default: str | None = "builtin") -> None:
    p.add_argument(
        "--data",
        default=default,
        required=default is None,
        metavar="SPEC",
        help="'builtin', a folder of HR images, or div2k:ROOT (default: %(default)s)",
    )
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor")


def add_trainer_flags(p: argparse.ArgumentParser) -> None:
    """Flags passed through to the Lightning Trainer (multi-GPU / multi-node as Lightning says)."""
    g = p.add_argument_group("Lightning Trainer")
    g.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto, ... (default: cpu)")
    g.add_argument("--devices", default="1", help="number of devices, a list, or 'auto'")
    g.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, fsdp, ...")
    g.add_argument("--precision", default="32-true", help="32-true, 16-mixed, bf16-mixed, ...")
    g.add_argument("--num-nodes", type=int, default=1, help="nodes for multi-node DDP")


def parse_devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def train_config_from_args(args: argparse.Namespace, lr: float):
    """The :class:`srsearch.train.training.TrainConfig` of ``srsearch train`` / ``supernet`` flags
    (each flag is the field of the same name)."""
    from srsearch.common.settings import build_config
    from srsearch.train.training import TrainConfig

    return build_config(TrainConfig, vars(args), lr=lr, devices=parse_devices(args.devices))
