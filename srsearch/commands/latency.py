"""`srsearch latency build | validate`: the compiler-aware latency table of the search space."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from srsearch.commands.bench import add_device_flags, device_options
from srsearch.common.errors import UserError
from srsearch.common.progress import ProgressBars
from srsearch.common.sizes import parse_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="build / validate the latency table of the search space on a target",
        description="Measure per-op latencies of the search space on the target runtime "
        "(LiteRT + delegate, after conversion) and fit the whole-network term; see "
        "docs/latency.md.",
    )
    cmds = p.add_subparsers(dest="latency_command", metavar="{build,validate}", required=True)

    b = cmds.add_parser(
        "build",
        help="measure the table (resumes: rerun on the same --out to finish it)",
        description="Export one small model per distinct op of the space, time them on the "
        "target, then time whole random subnets and fit the whole-network term. The table is "
        "rewritten after every measurement; a rerun skips what is already in it.",
    )
    b.add_argument("--out", type=Path, required=True, metavar="LUT.json", help="the table file")
    b.add_argument(
        "--target", default="host", metavar="TARGET", help="'host', 'adb' or 'adb:SERIAL'"
    )
    add_device_flags(b)  # --threads, --delegate, --gpu, --cpu-mask, --benchmark-binary, ...
    b.add_argument("--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor")
    b.add_argument(
        "--out-size",
        default="1280x720",
        metavar="WxH",
        help="HR output size; LR = ceil(out / scale) (default: 1280x720)",
    )
    b.add_argument(
        "--runs", type=int, default=6, help="timed runs per op model and round (default: 6)"
    )
    b.add_argument(
        "--net-runs", type=int, default=4, help="timed runs per whole net and round (default: 4)"
    )
    b.add_argument("--warmup", type=int, default=1, help="warm-up runs per model (default: 1)")
    b.add_argument(
        "--nets", type=int, default=30, help="whole nets measured for the fitted term (default: 30)"
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the fit nets (default: 0)")
    b.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="passes over all models; each figure is the median of its passes, which evens "
        "out load that comes and goes (default: 3)",
    )
    _add_jobs(b)
    b.add_argument(
        "--isolate",
        action="store_true",
        help="host: time each model in a fresh process (slower; docs/latency.md)",
    )
    # Advanced: shrink the space (tests, quick looks) and tune batching.
    b.add_argument("--max-width", type=int, default=None, help=argparse.SUPPRESS)
    b.add_argument("--max-depth", type=int, default=None, help=argparse.SUPPRESS)
    b.add_argument("--blocks", default=None, help=argparse.SUPPRESS)
    b.add_argument("--skip", choices=("nearest", "bicubic"), default=None,
                   help="global LR skip of the space's nets, as the supernet's `--skip` "
                   "(default: bicubic)")
    b.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    b.add_argument(
        "--layout",
        choices=("nhwc", "nchw"),
        default="nhwc",
        help="input/output layout of the whole nets, as `srsearch export --layout` (default: nhwc)",
    )
    b.add_argument(
        "--no-depth-to-space",
        action="store_true",
        help="time the pixel shuffle as litert-torch's RESHAPE/TRANSPOSE chain, as `srsearch "
        "export --no-depth-to-space` ships it (default: one DEPTH_TO_SPACE)",
    )
    b.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="the precision the model will ship in, as `srsearch export --precision`; every op "
        "and net is timed at it (default: fp32; docs/latency.md)",
    )
    b.add_argument(
        "--no-probe-cache",
        action="store_true",
        help="export every op model afresh instead of reusing those in $SRSEARCH_CACHE "
        "(they depend on the converter, not on the device)",
    )
    b.set_defaults(func=run_build)

    v = cmds.add_parser(
        "validate",
        help="measure random subnets end to end and compare with the table's predictions",
        description="Rebuild the table's target, time N subnets spanning the space (not the "
        "fit nets) and report MAPE, the largest error and the Spearman correlation; saved as "
        "<lut>.validate.json next to the table.",
    )
    v.add_argument("--lut", type=Path, required=True, metavar="LUT.json")
    v.add_argument("--n", type=int, default=30, help="nets to measure (default: 30)")
    v.add_argument("--seed", type=int, default=1, help="seed of the nets (default: 1)")
    v.add_argument("--runs", type=int, default=None, help="timed runs per net (default: build's)")
    v.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="passes over all nets; measured = median of a net's passes, and their spread is "
        "reported as the measurement noise (default: 3)",
    )
    v.add_argument(
        "--benchmark-binary",
        type=Path,
        default=None,
        metavar="PATH",
        help="adb targets: benchmark_model binary, if not where the build had it",
    )
    _add_jobs(v)
    v.set_defaults(func=run_validate)


def _add_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes exporting models in parallel, idle while timing runs (default: the "
        "number of CPUs, at most 4)",
    )


def _jobs(args: argparse.Namespace) -> int:
    from srsearch.latency.runner import default_jobs

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give 1 or more")
    return args.jobs or default_jobs()


def space_from_args(args: argparse.Namespace):
    """The default space at --scale, shrunk by the advanced --max-width/--max-depth/--blocks
    (`supernet.space.make_space`, the constructor the supernet and the pipeline use)."""
    from supernet.space import make_space

    blocks = None
    if args.blocks is not None:
        blocks = tuple(b.strip() for b in args.blocks.split(",") if b.strip())
    return make_space(args.scale, args.max_width, args.max_depth, blocks, args.skip)


def _device_options(args: argparse.Namespace) -> dict[str, Any]:
    opts = device_options(args)
    if args.target == "host":
        opts["isolate"] = args.isolate
    return opts


def _target_record(args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """How `validate` rebuilds this device: the target and its explicit options."""
    opts = _device_options(args)
    opts.update(threads=device.threads, delegate=device.delegate)
    if "benchmark_binary" in opts:
        opts["benchmark_binary"] = str(Path(opts["benchmark_binary"]).resolve())
    return {"target": args.target, "options": opts}


def run_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from srsearch.common.rundir_lock import file_lock

    console = Console()
    out_size = parse_size(args.out_size)
    space = space_from_args(args)
    with file_lock(args.out):
        return _build(args, console, out_size, space)


def _build(args: argparse.Namespace, console: Any, out_size: tuple[int, int], space: Any) -> int:
    import time

    from android_bench import device_from_target
    from srsearch.data.image_io import default_cache_dir
    from srsearch.latency import LatencyModel, build_table, lr_size, table_keys
    from srsearch.latency.runner import probe_cache_dir

    device = device_from_target(args.target, **_device_options(args))
    lr_hw = lr_size(out_size, space.scale)
    n_keys = len(table_keys(space, lr_hw))
    console.print(
        f"device [bold]{device.fingerprint_id()}[/bold]; x{space.scale}, output "
        f"{out_size[0]}x{out_size[1]} (LR {lr_hw[1]}x{lr_hw[0]}); {n_keys} distinct ops, "
        f"{args.nets} whole nets -> {args.out}"
    )
    t0 = time.perf_counter()
    with ProgressBars(console) as bar:
        table = build_table(
            device,
            space,
            args.out,
            out_size=out_size,
            target=_target_record(args, device),
            runs=args.runs,
            warmup=args.warmup,
            net_runs=args.net_runs,
            n_nets=args.nets,
            rounds=args.rounds,
            seed=args.seed,
            batch_size=args.batch_size,
            channels_last_io=args.layout == "nhwc",
            depth_to_space=not args.no_depth_to_space,
            precision=args.precision,
            jobs=_jobs(args),
            probe_cache=None if args.no_probe_cache else probe_cache_dir(default_cache_dir()),
            on_progress=bar.update,
        )
    fit = table.fit or {}
    console.print(
        f"{len(table.entries)} entries, {len(table.nets)} nets in {args.out} "
        f"({time.perf_counter() - t0:.0f} s this run)"
    )
    if fit.get("form") != "identity":
        coef = ", ".join(f"{k} {v:.4g}" for k, v in fit["coef"].items())
        console.print(
            f"fit: {fit['form']} ({coef}); leave-one-out MAPE {fit['loo_mape']:.1f}% on "
            f"{fit['n']} nets"
        )
    model = LatencyModel(table)
    lo, hi = space.min_arch(), space.max_arch()
    console.print(
        f"predicted: min arch {model.predict(lo):.1f} ms, max arch {model.predict(hi):.1f} ms"
    )
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from android_bench import device_from_target
    from srsearch.latency import LatencyModel, validate, validation_path

    console = Console()
    from srsearch.common.outpaths import check_out_file

    model = LatencyModel.load(args.lut)
    check_out_file(validation_path(args.lut), "validation report")
    target = dict(model.table.target)
    if not target:
        raise UserError(f"{args.lut} records no target to rebuild; rebuild the table")
    opts = dict(target.get("options", {}))
    if args.benchmark_binary is not None:
        opts["benchmark_binary"] = args.benchmark_binary
    device = device_from_target(target["target"], **opts)
    out = validation_path(args.lut)
    console.print(f"device [bold]{device.fingerprint_id()}[/bold]; {args.n} nets -> {out}")
    with ProgressBars(console) as bar:
        report = validate(
            model,
            device,
            out,
            n=args.n,
            seed=args.seed,
            runs=args.runs,
            passes=args.rounds,
            jobs=_jobs(args),
            on_progress=bar.update,
        )
    worst = report["worst"]
    console.print(
        f"{report['n']} nets: MAPE {report['mape_pct']:.2f}%, Spearman "
        f"{report['spearman']:.3f}, largest error {report['max_error_pct']:+.1f}% "
        f"(predicted {worst['predicted_ms']:.1f} ms, measured {worst['measured_ms']:.1f} ms, "
        f"depth {worst['depth']})"
    )
    console.print(
        f"measured / predicted: median {report['speed_ratio']:.3f}; MAPE with that common factor "
        f"divided out {report['scale_free_mape_pct']:.2f}% (load average: build "
        f"{_fmt(report['build_load1'])}, now {_fmt(report['load1'])})"
    )
    if "pass_spread_pct" in report:
        console.print(
            f"measurement noise: the {args.rounds} passes of a net differ by "
            f"{report['pass_spread_pct']:.1f}% on average ((max - min) / median)"
        )
    console.print(f"wrote {out}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
