"""`srsearch pipeline`: the main job."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="the main job: train, search, export, benchmark, report",
        description="Run every stage into runs/<timestamp>/ (or --run-dir); "
        "rerunning on the same run dir skips finished stages.",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML file overriding defaults")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory (default: runs/<timestamp>); reuse one to resume",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig.from_toml(args.config) if args.config else PipelineConfig()
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    report = run_pipeline(cfg, run_dir)
    print(f"[pipeline] report: {report}")
    return 0
