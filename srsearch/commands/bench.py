"""`srsearch bench`: latency of `.tflite` files on this machine or on a phone over adb."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency of .tflite models on the host or a phone (adb)",
        description="Time each model in a fresh runtime (warm-up, then timed runs) and write "
        "the statistics with the device fingerprint to JSON, one model at a time.",
    )
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL.tflite")
    p.add_argument(
        "--target",
        default="host",
        metavar="TARGET",
        help="'host', 'adb' (the only attached phone) or 'adb:SERIAL' (default: host)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: host 2, adb 4)")
    p.add_argument("--gpu", action="store_true", help="use the GPU delegate (adb targets only)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per model (default: 3)")
    p.add_argument(
        "--benchmark-binary",
        type=Path,
        default=None,
        metavar="PATH",
        help="Android benchmark_model binary (adb targets; see docs/android.md)",
    )
    p.add_argument(
        "--cpu-mask", default=None, metavar="HEX", help="taskset CPU mask on the phone, e.g. f0"
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT.json",
        help="results file (default: <first model>.bench.json next to it)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep results already in the JSON for this device and settings; time the rest",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from android_bench import device_from_target

    console = Console()
    device = device_from_target(
        args.target,
        threads=args.threads,
        delegate="gpu" if args.gpu else None,
        benchmark_binary=args.benchmark_binary,
        cpu_mask=args.cpu_mask,
    )
    out = args.json or args.models[0].with_name(f"{args.models[0].stem}.bench.json")
    report: dict[str, Any] = {
        "device_id": device.fingerprint_id(),
        "device": device.fingerprint(),
        "runs": args.runs,
        "warmup": args.warmup,
        "results": [],
    }
    done = _resumable(out, report) if args.resume else {}
    console.print(f"device [bold]{report['device_id']}[/bold]")

    results = {str(m): done[str(m)] for m in args.models if str(m) in done}
    todo = [m for m in args.models if str(m) not in results]
    if results:
        console.print(f"resuming: {len(results)} model(s) already in {out}")

    def record(result: Any) -> None:
        results[str(result.model)] = result.to_dict()
        report["results"] = [results[str(m)] for m in args.models if str(m) in results]
        _write_json(report, out)
        console.print(
            f"[{len(results)}/{len(args.models)}] {result.model.name}: "
            f"median {result.median_ms:.3f} ms"
        )

    device.benchmark(todo, runs=args.runs, warmup=args.warmup, on_result=record)
    report["results"] = [results[str(m)] for m in args.models]
    _write_json(report, out)
    console.print(_table(report["results"]))
    console.print(f"wrote {out}")
    return 0


def _resumable(out: Path, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results in `out` measured on the same device with the same runs/warm-up."""
    from srsearch import atomic

    old = atomic.read_json(out)
    if old is None:
        return {}
    same = all(old.get(k) == report[k] for k in ("device_id", "runs", "warmup"))
    return {r["model"]: r for r in old.get("results", [])} if same else {}


def _table(results: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title="latency (ms)")
    table.add_column("model")
    for col in ("median", "mean", "p10", "p90", "min"):
        table.add_column(col, justify="right")
    estimated = False
    for r in results:
        median = _ms(r["median_ms"])
        if r.get("median_is_avg"):
            median += "*"
            estimated = True
        cells = [_ms(r[k]) for k in ("mean_ms", "p10_ms", "p90_ms", "min_ms")]
        table.add_row(Path(r["model"]).name, median, *cells)
    if estimated:
        table.caption = "* the device printed no median; this is its mean"
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _write_json(report: dict[str, Any], out: Path) -> None:
    from srsearch import atomic

    atomic.write_json(out, report)
