"""Is weight sharing a valid proxy for the search? Spearman correlation between the PSNR of
random subnets with inherited supernet weights and their PSNR after a short stand-alone
fine-tune from those weights.

    python benchmarks/proxy_rank.py --supernet runs/sn/supernet.pt --n 20 --steps 300 \
        [--crop 64] [--from-scratch] [--out DIR --workers N --accelerator gpu --train-only]

The fine-tunes go to ``--out`` (default: a temporary folder), ``--workers`` at a time; a rerun
skips the finished ones, so ``--train-only`` on a GPU machine and a rerun here (after copying
``--out`` back) split the slow part from the scoring.

Two inherited scores are correlated: whole validation images, and the search's own scorer
(`srsearch.search.evaluator.SubnetEvaluator` as `run_search` builds it: the same images, the
central ``--crop`` LR pixels, default the search's 64), which is what stages 2 and 3 rank by.
``--from-scratch`` trains each subnet from random initialisation instead of from its inherited
weights, so that the reference does not start where the proxy is measured.

Subnets are drawn stratified by MACs (sorted samples, evenly spaced), so that the ranking spans
the space rather than its dense middle. Prints each subnet and the correlation, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_claimed  # noqa: E402

from srsearch.data.datasets import load_images  # noqa: E402
from srsearch.evaluation.evaluate import evaluate  # noqa: E402
from srsearch.search.run import RunConfig  # noqa: E402
from srsearch.train.supernet_training import load_supernet  # noqa: E402
from srsearch.train.training import TrainConfig, train  # noqa: E402
from supernet.space import macs  # noqa: E402


def _finetune(job: tuple) -> None:
    """Fine-tune one subnet into its run folder, unless it is finished."""
    import torch

    i, config, init, cfg, run = job
    if (Path(run) / "metrics.json").is_file():
        return
    torch.set_num_threads(1)
    train(config, cfg, Path(run), resume=True, init_state=init)
    print(f"[proxy] sub{i} fine-tuned", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--supernet", type=Path, required=True)
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300, help="fine-tune steps per subnet")
    ap.add_argument("--lr", type=float, default=RunConfig.lr, help="fine-tune learning rate "
                    "(default: the search's, %(default)g)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=RunConfig.crop,
                    help="LR crop of the search's scorer (default: the search's, %(default)s)")
    ap.add_argument("--from-scratch", action="store_true",
                    help="reference: train each subnet from random init, not inherited weights")
    ap.add_argument("--json", type=Path, default=Path("proxy_rank.json"))
    ap.add_argument("--out", type=Path, default=None,
                    help="fine-tune runs here (default: a temporary folder); a rerun skips the "
                    "finished ones")
    ap.add_argument("--workers", type=int, default=1, help="fine-tunes at once")
    ap.add_argument("--accelerator", default="cpu", help="Lightning accelerator, e.g. gpu")
    ap.add_argument("--train-only", action="store_true",
                    help="fine-tune and stop (a rerun without it scores and correlates)")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="start no fine-tune after this many seconds")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    net = load_supernet(args.supernet)
    space, scale = net.space, net.space.scale
    rng = random.Random(args.seed)
    pool = sorted((space.sample(rng) for _ in range(50 * args.n)), key=lambda a: macs(a, (64, 64)))
    archs = [pool[int(i * (len(pool) - 1) / max(1, args.n - 1))] for i in range(args.n)]
    out = args.out or Path(tempfile.mkdtemp(prefix="proxy-rank-"))
    cfg = TrainConfig(data=args.data, scale=scale, max_steps=args.steps, lr=args.lr,
                      val_every=args.steps, seed=args.seed, accelerator=args.accelerator)
    jobs = []
    for i, arch in enumerate(archs):
        sub = net.get_active_subnet(arch).eval()
        init = None if args.from_scratch else sub.state_dict()
        jobs.append((f"sub{i}", (i, sub.config(), init, cfg, str(out / f"sub{i}"))))
    run_claimed(_finetune, jobs, out, args.workers, args.deadline_s, "proxy")
    if args.train_only:
        return
    val = load_images(args.data, scale, "val")
    from srsearch.search.evaluator import SubnetEvaluator

    search_scorer = SubnetEvaluator(net, val, scale, crop=args.crop)
    rows = []
    for i, arch in enumerate(archs):
        metrics = out / f"sub{i}" / "metrics.json"
        if not metrics.is_file():
            print(f"[{i + 1}/{args.n}] not fine-tuned (rerun to finish): skipped", flush=True)
            continue
        summary = json.loads(metrics.read_text())
        sub = net.get_active_subnet(arch).eval()
        inherited = evaluate(sub, val, scale)["mean"]["psnr"]
        searched = search_scorer.psnr(arch)
        rows.append(
            {
                "arch": arch.to_dict(),
                "gmac_720p": macs(arch, (360, 640)) / 1e9,
                "psnr_inherited": inherited,
                "psnr_search_scorer": searched,
                "psnr_finetuned": summary["val_psnr"],
                "finetune_s": summary.get("wall_s"),
            }
        )
        print(
            f"[{i + 1}/{args.n}] {rows[-1]['gmac_720p']:.2f} GMAC  inherited {inherited:.3f} "
            f"dB  search scorer {searched:.3f} dB  fine-tuned {summary['val_psnr']:.3f} dB",
            flush=True,
        )
    ref = [r["psnr_finetuned"] for r in rows]
    rho = spearmanr([r["psnr_inherited"] for r in rows], ref)[0]
    rho_search = spearmanr([r["psnr_search_scorer"] for r in rows], ref)[0]
    how = "from scratch" if args.from_scratch else "fine-tuned from inherited weights"
    print(f"Spearman over {len(rows)} subnets, reference {how} {args.steps} steps:")
    print(f"  whole-image inherited PSNR:            {rho:.3f}")
    print(f"  the search's scorer ({args.crop}px LR crops): {rho_search:.3f}")
    args.json.write_text(
        json.dumps(
            {"spearman": rho, "spearman_search_scorer": rho_search, "crop": args.crop,
             "from_scratch": args.from_scratch, "steps": args.steps, "machine": machine(),
             "subnets": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()
