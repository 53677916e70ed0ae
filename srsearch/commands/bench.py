"""`srsearch bench`: latency of `.tflite` files on this machine or on phones over adb."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from srsearch.common import atomic
from srsearch.common.errors import UserError

DELEGATES = ("xnnpack", "cpu", "gpu", "nnapi")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency of .tflite models on the host or phones (adb)",
        description="Time each model in a fresh runtime (warm-up, then timed runs) in "
        "interleaved rounds (forward, then backward, ...); a model's figure is the median of its "
        "round medians, as in the latency table builder. Writes the statistics with each "
        "device's fingerprint to JSON as it goes and prints one table per fingerprint.",
    )
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL.tflite")
    p.add_argument(
        "--target",
        default="host",
        metavar="TARGET[,TARGET...]",
        help="'host', 'adb' (the only attached phone) or 'adb:SERIAL'; several, comma-separated, "
        "are timed one after another (default: host)",
    )
    add_device_flags(p)
    p.add_argument("--runs", type=int, default=20, help="timed runs per model (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per model (default: 3)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="passes over all models, alternating direction; a model's figure is the median of "
        "its round medians (default: 3)",
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
        help="keep rounds already in the JSON for the same devices and settings; time the rest",
    )
    p.set_defaults(func=run)


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """Flags that build a device, shared with `srsearch latency build`."""
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: host 2, adb 4)")
    p.add_argument(
        "--delegate",
        choices=DELEGATES,
        default=None,
        help="xnnpack (LiteRT's default CPU path), cpu (plain kernels), gpu or nnapi (adb "
        "targets); GPU/NNAPI runs fail if the delegate refuses part of the graph (default: "
        "xnnpack)",
    )
    p.add_argument("--gpu", action="store_true", help="same as --delegate gpu")
    p.add_argument(
        "--allow-partial-delegation",
        action="store_true",
        default=None,
        help="GPU/NNAPI: time a graph the delegate takes only part of, recording its node counts",
    )
    p.add_argument(
        "--gpu-precision",
        choices=("fp16", "fp32"),
        default=None,
        help="GPU delegate precision (default: fp16, benchmark_model's precision-loss default)",
    )
    p.add_argument(
        "--gpu-backend",
        choices=("cl", "gl"),
        default=None,
        help="GPU delegate backend, OpenCL or OpenGL (default: cl)",
    )
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
        "--max-secs",
        type=float,
        default=None,
        help="adb: benchmark_model's --max_secs per phase (default: 240)",
    )
    p.add_argument(
        "--cooldown",
        type=float,
        default=None,
        metavar="SECONDS",
        help="adb: before each model wait up to this long for the thermal status to be normal",
    )


def device_options(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor options from `add_device_flags`' flags (None: the device's default)."""
    if args.gpu and args.delegate not in (None, "gpu"):
        raise UserError(f"--gpu and --delegate {args.delegate} disagree; give one of them")
    opts = {
        "threads": args.threads,
        "delegate": "gpu" if args.gpu else args.delegate,
        "allow_partial_delegation": args.allow_partial_delegation,
        "gpu_precision": args.gpu_precision,
        "gpu_backend": args.gpu_backend,
        "benchmark_binary": args.benchmark_binary,
        "cpu_mask": args.cpu_mask,
        "max_secs": args.max_secs,
        "cooldown_s": args.cooldown,
    }
    return {k: v for k, v in opts.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from android_bench import device_from_target

    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: give 1 or more")
    console = Console()
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if len(set(targets)) != len(targets):
        raise UserError(f"--target {args.target}: a target is named twice")
    opts = device_options(args)
    devices = [(t, device_from_target(t, **opts)) for t in targets]
    out = args.json or args.models[0].with_name(f"{args.models[0].stem}.bench.json")
    report: dict[str, Any] = {
        "runs": args.runs,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "targets": [
            {"target": t, "device_id": d.fingerprint_id(), "device": d.fingerprint(), "results": []}
            for t, d in devices
        ],
    }
    old = _resumable(out, report) if args.resume else {}
    for entry, (target, device) in zip(report["targets"], devices, strict=True):
        console.print(f"{target}: device [bold]{entry['device_id']}[/bold]")
        rounds: dict[str, list[dict[str, Any]]] = {
            str(m): list(old.get(target, {}).get(str(m), [])) for m in args.models
        }

        def record(result: Any, entry: dict = entry, rounds: dict = rounds) -> None:
            rounds[str(result.model)].append(result.to_dict())
            entry["results"] = [_summary(m, rounds[str(m)]) for m in args.models if rounds[str(m)]]
            atomic.write_json(out, report)
            n = len(rounds[str(result.model)])
            console.print(
                f"  round {n}/{args.rounds} {result.model.name}: median {result.median_ms:.3f} ms"
                + (" [yellow](throttled)[/yellow]" if result.extra.get("throttled") else "")
            )

        device.benchmark_rounds(args.models, args.rounds, args.runs, args.warmup,
                                done={Path(m): len(rounds[str(m)]) for m in args.models},
                                on_result=record)
        entry["results"] = [_summary(m, rounds[str(m)]) for m in args.models]
    atomic.write_json(out, report)
    by_fp: dict[str, list[dict[str, Any]]] = {}
    for entry in report["targets"]:
        by_fp.setdefault(entry["device_id"], []).append(entry)
    for fp_id, entries in by_fp.items():
        console.print(_table(fp_id, entries))
    console.print(f"wrote {out}")
    return 0


def _summary(model: Path, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One model on one device over its rounds: the median of round medians and the spread."""
    medians = [r["median_ms"] for r in rounds]
    median = statistics.median(medians)

    def mid(key: str) -> float | None:
        vals = [r[key] for r in rounds if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    return {
        "model": str(model),
        "median_ms": median,
        "round_ms": medians,
        "spread_pct": 100.0 * (max(medians) - min(medians)) / median if median else 0.0,
        "mean_ms": statistics.fmean(r["mean_ms"] for r in rounds),
        "p10_ms": mid("p10_ms"),
        "p90_ms": mid("p90_ms"),
        "min_ms": min(r["min_ms"] for r in rounds),
        "median_is_avg": any(r.get("median_is_avg") for r in rounds),
        "throttled": any(r.get("extra", {}).get("throttled") for r in rounds),
        "rounds": rounds,
    }


def _resumable(out: Path, report: dict[str, Any]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Rounds in `out` measured by the same targets/devices with the same runs/warm-up."""
    from srsearch.common import atomic

    old = atomic.read_json(out)
    if old is None or any(old.get(k) != report[k] for k in ("runs", "warmup")):
        return {}
    done = {}
    ids = {e["target"]: e["device_id"] for e in report["targets"]}
    for entry in old.get("targets", []):
        if ids.get(entry.get("target")) == entry.get("device_id"):
            done[entry["target"]] = {r["model"]: r["rounds"] for r in entry.get("results", [])}
    return done


def _table(fp_id: str, entries: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=f"latency (ms) on {fp_id}")
    several = len(entries) > 1
    if several:
        table.add_column("target")
    table.add_column("model")
    for col in ("median", "spread %", "mean", "p10", "p90", "min"):
        table.add_column(col, justify="right")
    notes = set()
    for entry in entries:
        for r in entry["results"]:
            median = _ms(r["median_ms"])
            if r.get("median_is_avg"):
                median += "*"
                notes.add("* the device printed no median; this is its mean")
            if r.get("throttled"):
                median += " (T)"
                notes.add("(T) timed while the phone was thermally throttled")
            cells = [f"{r['spread_pct']:.1f}"] + [
                _ms(r[k]) for k in ("mean_ms", "p10_ms", "p90_ms", "min_ms")
            ]
            row = [Path(r["model"]).name, median, *cells]
            table.add_row(*([entry["target"], *row] if several else row))
    if notes:
        table.caption = "; ".join(sorted(notes))
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


