"""`srsearch search`: stages 2 and 3 (architecture and pruning search), fine-tuning, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from srsearch.commands._common import parse_devices


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="stages 2+3: search a subnet and its pruning under a latency budget, fine-tune it",
        description="Stage 2 searches the supernet's space for the best validation PSNR "
        "(inherited weights) whose predicted latency fits --budget-ms; stage 3 searches "
        "per-layer pruning ratios of that subnet by Bayesian optimisation; the compact model "
        "is fine-tuned and written as OUT/model.pt with summary.json, trials.csv and "
        "pareto.png. Each step is skipped when its output exists; --resume continues a "
        "killed run with all finished trials (docs/search.md).",
    )
    p.add_argument(
        "--supernet",
        required=True,
        type=Path,
        metavar="CKPT",
        help="supernet.pt, a `srsearch supernet` run directory or its last.ckpt",
    )
    p.add_argument(
        "--lut",
        required=True,
        type=Path,
        metavar="LUT",
        help="latency table of the target (`srsearch latency build`)",
    )
    p.add_argument(
        "--budget-ms",
        required=True,
        type=float,
        metavar="B",
        help="latency budget on the table's target, ms",
    )
    p.add_argument(
        "--budget-floor",
        type=float,
        default=0.85,
        metavar="F",
        help="consider only nets predicted at >= F x budget (the best net is usually near "
        "the budget, docs/search.md); 0: no floor (default: %(default)s)",
    )
    p.add_argument(
        "--overshoot",
        type=float,
        default=0.0,
        metavar="O",
        help="stage 2 searches under (1 + O) x budget and stage 3 prunes the choice back "
        "into the budget (needs --stage3-trials >= 1; docs/search.md); 0: stage 2 searches "
        "under the budget itself (default: %(default)s)",
    )
    p.add_argument(
        "--data",
        default="builtin",
        metavar="SPEC",
        help="'builtin', a folder of HR images, or div2k:ROOT; its train split fine-tunes, "
        "its val split scores candidates unless --search-data is given (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--search-data",
        default=None,
        metavar="SPEC",
        help="score and re-rank candidates on every image of SPEC instead of --data's val "
        "split: images you will not report on, so that the choice does not flatter them",
    )
    p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--trials", type=int, default=200, help="stage-2 trials in total")
    p.add_argument(
        "--stage3-trials", type=int, default=40,
        help="stage-3 trials (0: no pruning search; a re-ranked net is left whole unless "
        "--overshoot > 0)"
    )
    p.add_argument(
        "--rerank", type=int, default=0, metavar="K",
        help="fine-tune stage 2's K best candidates --rerank-steps steps each and keep the best "
        "(0: stage 2's pick; docs/search.md)",
    )
    p.add_argument(
        "--rerank-from", default="inherited", choices=("inherited", "scratch"),
        help="re-rank by a fine-tune from the supernet's weights, or by training each "
        "candidate from random initialisation with the same recipe, which ranks nets as "
        "longer trainings from scratch do (default: %(default)s; docs/search.md)",
    )
    p.add_argument(
        "--train-rep", default="none", choices=("none", "repvgg", "ecb"),
        help="train the re-ranked candidates and the fine-tune as plain convs, or as RepVGG / "
        "ECB blocks collapsed into the same plain net at the end (same file, same latency; "
        "default: %(default)s; docs/search.md, session 12)",
    )
    p.add_argument(
        "--rerank-pool", default="best", choices=("best", "depths"),
        help="re-rank stage 2's best, or the best of every depth in turn (the inherited score "
        "favours shallow nets; default: %(default)s)",
    )
    p.add_argument(
        "--rerank-family", type=int, default=0, metavar="N",
        help="the N ECBSR-style nets of the space (head C + m conv cells of C) that the latency "
        "model puts closest under the budget are stage 2's first trials and lead the re-rank's "
        "shortlist, so the search weighs the hand-designed net scaled to the budget against "
        "its own picks, trained alike (default: %(default)s)",
    )
    p.add_argument("--rerank-steps", type=int, default=1000, help="training steps per "
                   "re-ranked candidate")
    p.add_argument(
        "--latency-rounds", type=int, default=2, metavar="N",
        help="with --measure: when the chosen net, timed on the target, falls outside "
        "[--measured-floor x budget, budget] (judged as --check-speed says), search again "
        "with the latency model scaled by judged/predicted, at most N times (0: no check; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--measured-floor", type=float, default=0.9, metavar="F",
        help="lower end of that window, x budget (default: %(default)s)",
    )
    p.add_argument(
        "--check-speed", default="session", choices=("session", "raw"),
        help="session: time the chosen net beside 6 nets the latency model prices near it, 7 "
        "interleaved rounds, and judge its time at the speed the table was measured at "
        "(each round divided by their median measured/predicted in that round, then the "
        "median over rounds; a host's speed moves within minutes); raw: as "
        "read, for a target persistently faster or slower than its table (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=1000,
        help="fine-tuning steps (0: keep the inherited weights)",
    )
    p.add_argument(
        "--sampler",
        default="evolution",
        choices=("evolution", "tpe", "random"),
        help="stage-2 sampler (default: %(default)s; docs/search.md)",
    )
    p.add_argument(
        "--stage3-sampler",
        default="gp",
        choices=("gp", "tpe"),
        help="stage-3 sampler (default: %(default)s)",
    )
    p.add_argument(
        "--crop",
        type=int,
        default=64,
        help="score candidates on LR center crops of this side (0: whole images)",
    )
    p.add_argument(
        "--max-ratio",
        type=float,
        default=0.75,
        help="largest stage-3 pruning ratio per layer group",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="fine-tuning batch")
    p.add_argument("--lr-patch", type=int, default=48, help="fine-tuning LR patch side")
    p.add_argument("--lr", type=float, default=2e-3, help="fine-tuning learning rate")
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="fine-tuning distillation weight from the largest subnet (0..1)",
    )
    p.add_argument(
        "--measure",
        default=None,
        metavar="TARGET",
        help="measure the final model on 'host', 'adb' or 'adb:SERIAL'",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=MS:PSNR",
        help="mark a baseline on pareto.png (repeatable)",
    )
    p.add_argument("--accelerator", default="cpu", help="fine-tuning: cpu, gpu, auto, ...")
    p.add_argument("--devices", default="1", help="fine-tuning: number of devices or 'auto'")
    p.set_defaults(func=run)


def load_latency_model(path: Path):
    """The one place the search meets `srsearch.latency`: the target's `LatencyModel`
    (``predict(arch) -> ms``), loaded from a table file."""
    from srsearch.latency import LatencyModel

    return LatencyModel.load(path)


def parse_baseline(text: str) -> tuple[str, tuple[float, float]]:
    """'espcn=12.5:31.2' -> ('espcn', (12.5, 31.2))."""
    from srsearch.common.errors import UserError

    name, _, rest = text.partition("=")
    try:
        ms, psnr = (float(v) for v in rest.split(":"))
    except ValueError:
        raise UserError(f"--baseline {text!r}: give NAME=MS:PSNR, e.g. espcn=12.5:31.2") from None
    return name, (ms, psnr)


def run(args: argparse.Namespace) -> int:
    from srsearch.common.settings import build_config
    from srsearch.search.run import RunConfig, run_search
    from srsearch.train.supernet_training import load_supernet

    cfg = build_config(RunConfig, vars(args), crop=args.crop or None,
                       devices=parse_devices(args.devices))
    baselines = dict(parse_baseline(b) for b in args.baseline)
    supernet = load_supernet(args.supernet)
    predictor = load_latency_model(args.lut)
    device = None
    if args.measure:
        from android_bench import device_from_target

        device = device_from_target(args.measure)
    s = run_search(
        supernet,
        predictor,
        cfg,
        args.out,
        resume=args.resume,
        device=device,
        baselines=baselines,
        export_options=predictor.export_spec,
        progress=True,
        supernet_path=args.supernet,
    )
    from srsearch.search.run import speed_words

    measured, at_table = s["measured_latency_ms"], s.get("measured_table_speed_ms")
    speed = (f" ({at_table:.2f} ms at the latency table's speed: the target ran "
             f"{speed_words(s['measured'])} its table beside the nets timed with it)"
             if at_table is not None and s["measured"].get("speed", 1.0) != 1.0 else "")
    print(
        f"searched {s['candidates_scored']} candidates in {s['search_wall_s']:.0f} s; "
        f"predicted {s['predicted_latency_ms']:.2f} ms (budget {s['budget_ms']:g})"
        + (f", measured {measured:.2f} ms{speed}" if measured is not None else "")
        + f"; val Y-PSNR {s['psnr']:.3f} dB (bicubic {s['psnr_bicubic']:.3f}), "
        f"SSIM {s['ssim']:.4f}; {args.out / 'model.pt'}"
    )
    return 0
