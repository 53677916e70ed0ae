"""`srsearch compare`: the searched model against the hand-designed baselines."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from srsearch.comparison.compare import DEFAULT_BASELINES

    p = sub.add_parser(
        "compare",
        help="train the baselines like the searched model, measure and evaluate all side by side",
        description="Train the hand-designed baselines with the search run's fine-tuning "
        "recipe (its training data, batch, patch and seed) for as many steps as the delivered "
        "model had (supernet + fine-tune), export every model to "
        "LiteRT at the run's input size, time them all on one target, evaluate them on --data "
        "and write RUN_DIR/compare/compare.md (+ .csv, .json, .png). Finished steps are "
        "skipped on a rerun.",
    )
    p.add_argument(
        "--run",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="a finished `srsearch search` output directory",
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="SPEC",
        help="evaluation data, repeatable: the val split of the run's training "
        "spec, all images of any other spec (default: the run's val split)",
    )
    p.add_argument(
        "--baselines",
        default=",".join(DEFAULT_BASELINES),
        metavar="A,B,...",
        help="presets to train (default: %(default)s)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="host, adb or adb:SERIAL (default: the target of the run's latency table)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads on the target (default: the table's)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps of every model trained here (default: the delivered model's "
        "supernet + fine-tuning steps, so all had the same steps and images)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train every model this many times (seeds run seed .. +N-1) and give mean ± std "
        "and each margin's spread (default: %(default)s)",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="also train the searched architecture from random initialisation with the "
        "baselines' recipe (row searched-scratch)",
    )
    p.add_argument(
        "--rep",
        default=None,
        choices=("none", "repvgg", "ecb"),
        help="training-time form of the from-scratch row: plain convs, or RepVGG / ECB blocks "
        "that collapse into the same plain net for export (default: the run's --train-rep)",
    )
    p.add_argument(
        "--ecb-init",
        default=None,
        choices=("paper", "damped"),
        help="how the ECBSR baselines' ECB branches start: as ECBSR's code (paper), or damped "
        "as the searched net's ECB blocks start (1x1 stage x 0.25, its bias held at 0), so "
        "both train with the same blocks (default: damped when --rep is ecb, else paper)",
    )
    p.add_argument(
        "--lut",
        type=Path,
        default=None,
        help="the run's latency table: adds the ECBSR-style net scaled to the budget (the "
        "slowest under it, timed on the target, of the 6 the table puts nearest; the "
        "baseline a user would scale to fit)",
    )
    p.add_argument(
        "--supernet",
        type=Path,
        default=None,
        help="the run's supernet (default: the one its config.json names), for its training "
        "record and the delivered model's extra seeds",
    )
    p.add_argument("--bench-runs", type=int, default=20, help="timed runs per model")
    p.add_argument(
        "--accelerator",
        default=None,
        help="Lightning accelerator of the trainings here, e.g. gpu (default: the run's)",
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train every row's models and stop; several processes given the same arguments "
        "share the trainings out, and a later call without it finds them trained",
    )
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/compare")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.comparison.compare import compare_run

    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    predictor = None
    if args.lut is not None:
        from srsearch.commands.search import load_latency_model

        predictor = load_latency_model(args.lut)
    compare_run(
        args.run,
        args.data,
        baselines=baselines,
        target=args.target,
        threads=args.threads,
        steps=args.steps,
        bench_runs=args.bench_runs,
        out=args.out,
        seeds=args.seeds,
        from_scratch=args.from_scratch,
        rep=args.rep,
        ecb_init=args.ecb_init,
        predictor=predictor,
        supernet=args.supernet,
        accelerator=args.accelerator,
        train_only=args.train_only,
    )
    out = args.out or args.run / "compare"
    if args.train_only:
        print(f"trained into {out}; run again without --train-only to time and evaluate")
        return 0
    print((out / "compare.md").read_text())
    print(f"wrote {out / 'compare.md'}, compare.csv, compare.json, compare.png")
    return 0
