"""`srsearch compare`: the searched model against the hand-designed baselines."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from srsearch.compare import DEFAULT_BASELINES

    p = sub.add_parser(
        "compare",
        help="train the baselines like the searched model, measure and evaluate all side by side",
        description="Train the hand-designed baselines with the search run's fine-tuning "
        "settings (its training data, steps, batch, patch and seed), export every model to "
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
        help="training steps of the baselines (default: the run's fine-tuning steps)",
    )
    p.add_argument("--bench-runs", type=int, default=20, help="timed runs per model")
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/compare")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.compare import compare_run

    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    compare_run(
        args.run,
        args.data,
        baselines=baselines,
        target=args.target,
        threads=args.threads,
        steps=args.steps,
        bench_runs=args.bench_runs,
        out=args.out,
    )
    out = args.out or args.run / "compare"
    print((out / "compare.md").read_text())
    print(f"wrote {out / 'compare.md'}, compare.csv, compare.json, compare.png")
    return 0
