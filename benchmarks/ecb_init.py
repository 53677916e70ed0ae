"""Does a net train in ECB form with ReLU? Short trainings of one architecture in each form.

    python benchmarks/ecb_init.py --arch '{"scale": 2, "head_width": 16, "cells": [...]}' \
        --rep ecb --branch-init damped --steps 1000 --seed 0
    python benchmarks/ecb_init.py --arch ecbsr-m4c16 --branch-init paper

Trains ``--arch`` (a subnet's ArchConfig as JSON, in form ``--rep``, or an ECBSR-style
``ecbsr-mMcC`` with PReLU) from random initialisation on ``--data``'s train split (batch 16, LR
patch 48, Adam at ``--lr`` cosine-annealed to 1 %, one torch thread: the compare's recipe, in a
plain loop without Lightning) and prints the Y-PSNR on every image of ``--val-data`` four
times during training, the first 3x3 activation's share of positive outputs after 10 steps
(0: the head's ReLUs died), and the machine. ``--branch-init`` chooses how the ECB branches
start (`srsearch.models.ecbsr.BRANCH_INITS`); ``--clip`` clips the gradient norm and
``--leaky S`` trains with leaky ReLUs of slope S annealed to 0 (plain ReLU) by
``--leaky-end`` x steps, two remedies measured against the damped init (docs/search.md,
session 12). Pick settings on a split that is not reported (t91's last 11).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


class _Leaky(nn.Module):
    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope) if self.slope > 0 else F.relu(x)


def _model(args: argparse.Namespace) -> nn.Module:
    from srsearch.models import build_model
    from srsearch.models import subnet as subnet_mod

    if args.arch.startswith("ecbsr-m"):
        m, c = args.arch[len("ecbsr-m"):].split("c")
        return build_model({"family": "ecbsr", "scale": 2, "m": int(m), "channels": int(c),
                            "act": "prelu", "branch_init": args.branch_init})
    # the subnet's ECB form starts damped; --branch-init paper restores ECBSR's own start
    subnet_mod._REP_CONVS["ecb"] = functools.partial(subnet_mod.ECBConv,
                                                     branch_init=args.branch_init)
    return build_model(subnet_mod.subnet_config(json.loads(args.arch), args.rep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--rep", default="none", choices=("none", "repvgg", "ecb"))
    ap.add_argument("--branch-init", default="damped", choices=("paper", "damped"))
    ap.add_argument("--data", default="../shared/datasets/sun80+../shared/datasets/t91")
    ap.add_argument("--val-data", default="runs/eval/t91_val")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--clip", type=float, default=0.0)
    ap.add_argument("--leaky", type=float, default=0.0)
    ap.add_argument("--leaky-end", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from srsearch.data.datasets import load_images
    from srsearch.data.patches import FullImageDataset, PatchDataset
    from srsearch.evaluation.metrics import score_sr
    from srsearch.train.training import lr_factor

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = _model(args)
    leaks = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if args.leaky > 0 and isinstance(child, nn.ReLU):
                leaks.append(_Leaky(args.leaky))
                setattr(parent, name, leaks[-1])
    first_act = next(m for m in model.modules() if isinstance(m, nn.ReLU | nn.PReLU | _Leaky))
    alive: list[float] = []
    first_act.register_forward_hook(lambda m, i, o: alive.append(float((o > 0).float().mean())))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], args.lr)
    train = PatchDataset(load_images(args.data, 2, "train"), 2, 48, length=16 * args.steps,
                         seed=args.seed)
    val = FullImageDataset(load_images(args.val_data, 2, "all"))

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            psnr = [score_sr(model(lr[None])[0], hr, 2, ssim=False)[0] for lr, hr, _ in val]
        model.train()
        return sum(psnr) / len(psnr)

    t0, curve = time.perf_counter(), {}
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(step, args.steps)
        for leak in leaks:
            leak.slope = args.leaky * max(0.0, 1 - step / (args.leaky_end * args.steps))
        batch = [train[step * 16 + j] for j in range(16)]
        lr_in = torch.stack([b[0] for b in batch])
        loss = F.l1_loss(model(lr_in), torch.stack([b[1] for b in batch]))
        opt.zero_grad()
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if step == 9:
            alive_at_10 = alive[-1]
        if (step + 1) % max(1, args.steps // 4) == 0:
            curve[step + 1] = round(evaluate(), 3)
            print(f"step {step + 1}: {curve[step + 1]:.3f} dB ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    print(json.dumps({"arch": args.arch, "rep": args.rep, "branch_init": args.branch_init,
                      "clip": args.clip, "leaky": args.leaky, "seed": args.seed,
                      "head_alive_at_10": round(alive_at_10, 3), "val_psnr": curve}))
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
