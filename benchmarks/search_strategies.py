"""Which stage-2 strategy finds the best subnet in the fewest PSNR evaluations?

    python benchmarks/search_strategies.py --supernet runs/sn/supernet.pt --evals 60 --seeds 3

Runs every strategy (``tpe``, ``evolution``, ``random``) with several seeds on the same
supernet, images, predictor and budget, each until it has scored ``--evals`` distinct
candidates (infeasible proposals cost no evaluation and are not counted, but TPE and random
make them; their trial counts are printed). Prints the best PSNR found after 5, 10, 20, ...
evaluations (mean and spread over seeds) and writes JSON.

Scores are deterministic, so one evaluator (with its arch -> score cache) serves all runs; a
run still counts every distinct arch it scores as an evaluation, so this makes the benchmark
cheaper without changing what any strategy sees.

``--stage3 N`` also runs stage 3 (GP vs TPE, N trials) on the best stage-2 arch at the same
budget, and the same after a stage 2 at ``--slack`` x the budget (stage 3 must then prune to
the budget), to see whether a pruning stage adds anything with inherited weights.

The predictor is ``--lut`` (a `srsearch latency build` table) or, without it, a MAC proxy:
ms = ``--ms-per-gmac`` x GMAC at the 720p LR size + 1 ms, which is what the host table's
linear fit looks like to first order (about 10 ms per GMAC on the 2-thread host). The budget
is the ``--budget-quantile`` of the predicted latency of uniform samples of the space, so
that the constraint binds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from srsearch.data.datasets import load_images  # noqa: E402
from srsearch.search import (  # noqa: E402
    Stage2Config,
    SubnetEvaluator,
    search_architecture,
    search_pruning,
    space_floors,
)
from srsearch.train.supernet_training import load_supernet  # noqa: E402
from supernet.space import ArchConfig, macs  # noqa: E402

STRATEGIES = ("tpe", "evolution", "random")


class MacProxy:
    """ms = ms_per_gmac * GMAC at ``lr_hw`` + const_ms."""

    def __init__(self, ms_per_gmac: float, lr_hw: tuple[int, int], const_ms: float = 1.0):
        self.ms_per_gmac, self.lr_hw, self.const_ms = ms_per_gmac, lr_hw, const_ms
        self.fingerprint_id = f"mac-proxy-{ms_per_gmac:g}ms-per-gmac"

    def predict(self, arch: ArchConfig) -> float:
        return self.ms_per_gmac * macs(arch, self.lr_hw) / 1e9 + self.const_ms


def curve(trials: list[dict], n: int) -> list[float]:
    """Best feasible PSNR after each of the first ``n`` evaluations (scored trials)."""
    best, out = float("-inf"), []
    for t in trials:
        if t["scored"]:
            best = max(best, t["psnr"])
            out.append(best)
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--supernet", type=Path, required=True)
    ap.add_argument("--data", default="builtin", help="its val split scores candidates")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--lut", type=Path, default=None)
    ap.add_argument("--ms-per-gmac", type=float, default=10.0)
    ap.add_argument("--budget-ms", type=float, default=None)
    ap.add_argument("--budget-quantile", type=float, default=0.3)
    ap.add_argument("--evals", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--stage3", type=int, default=0, help="stage-3 trials (0: skip)")
    ap.add_argument("--slack", type=float, default=1.25)
    ap.add_argument("--json", type=Path, default=Path("search_strategies.json"))
    args = ap.parse_args()

    print(f"machine: {machine()}")
    net = load_supernet(args.supernet)
    space = net.space
    if args.lut:
        from srsearch.latency.model import LatencyModel

        predictor = LatencyModel.load(args.lut)
    else:
        predictor = MacProxy(args.ms_per_gmac, (360 * 2 // space.scale, 640 * 2 // space.scale))
    rng = random.Random(0)
    sample_ms = sorted(predictor.predict(space.sample(rng)) for _ in range(2000))
    budget = args.budget_ms or sample_ms[int(args.budget_quantile * len(sample_ms))]
    feasible_share = sum(ms <= budget for ms in sample_ms) / len(sample_ms)
    print(
        f"space: {space}\npredictor: {predictor.fingerprint_id}; budget {budget:.2f} ms "
        f"({feasible_share:.0%} of uniform samples fit; min arch "
        f"{predictor.predict(space.min_arch()):.2f} ms, max arch "
        f"{predictor.predict(space.max_arch()):.2f} ms)"
    )
    images = load_images(args.data, space.scale, "val")
    memo = SubnetEvaluator(net, images, space.scale, crop=args.crop)
    tmp = Path(tempfile.mkdtemp(prefix="search-strategies-"))
    runs: dict[str, list[dict]] = {}
    for name in args.strategies.split(","):
        runs[name] = []
        for seed in range(args.seeds):
            cfg = Stage2Config(
                budget, n_trials=50 * args.evals, sampler=name, seed=seed, max_scored=args.evals
            )
            t0 = time.perf_counter()
            r = search_architecture(space, predictor, memo, cfg, tmp / f"{name}{seed}.db")
            wall = time.perf_counter() - t0
            c = curve(r.trials, args.evals)
            runs[name].append(
                {
                    "seed": seed,
                    "curve": c,
                    "trials": r.n_trials,
                    "feasible": r.n_feasible,
                    "best_arch": r.arch.to_dict(),
                    "best_psnr": r.psnr,
                    "best_ms": r.latency_ms,
                    "wall_s": wall,
                }
            )
            print(
                f"{name:>9} seed {seed}: best {r.psnr:.3f} dB at {r.latency_ms:.2f} ms after "
                f"{len(c)} evaluations, {r.n_trials} trials ({r.n_feasible} feasible), "
                f"{wall:.0f} s",
                flush=True,
            )

    marks = [m for m in (5, 10, 20, 30, 40, 60, 80, 100, 150, 200) if m <= args.evals]
    print(
        f"\nbest Y-PSNR (dB, inherited weights, {args.crop}px crops) after n evaluations, "
        f"mean ± std over {args.seeds} seeds"
    )
    print(f"{'n':>5}" + "".join(f"{n:>18}" for n in runs))
    for m in marks:
        cells = []
        for rs in runs.values():
            vals = [r["curve"][m - 1] for r in rs if len(r["curve"]) >= m]
            sd = statistics.pstdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):>11.3f} ±{sd:.3f}" if vals else f"{'-':>18}")
        print(f"{m:>5}" + "".join(cells))
    print(
        "mean trials for those evaluations: "
        + ", ".join(f"{n} {statistics.mean(r['trials'] for r in rs):.0f}" for n, rs in runs.items())
    )
    print(
        "mean wall s per run: "
        + ", ".join(f"{n} {statistics.mean(r['wall_s'] for r in rs):.0f}" for n, rs in runs.items())
    )
    result = {
        "machine": machine(),
        "space": repr(space),
        "predictor": predictor.fingerprint_id,
        "budget_ms": budget,
        "evals": args.evals,
        "crop": args.crop,
        "runs": runs,
    }

    if args.stage3:
        result["stage3"] = stage3(args, net, predictor, memo, budget, runs, tmp)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


def stage3(args, net, predictor, memo, budget, runs, tmp) -> dict:
    """Stage 3 from the best stage-2 arch (GP vs TPE), and from a stage 2 at slack x budget."""
    space = net.space
    best = max((r for rs in runs.values() for r in rs), key=lambda r: r["best_psnr"])
    out = {}
    print(
        f"\nstage 3 ({args.stage3} trials) from the best stage-2 arch, {best['best_psnr']:.3f} "
        f"dB at {best['best_ms']:.2f} ms, budget {budget:.2f} ms"
    )
    starts = {"same budget": ArchConfig.from_dict(best["best_arch"])}
    r2 = search_architecture(
        space,
        predictor,
        memo,
        Stage2Config(
            budget * args.slack, n_trials=2000, sampler="evolution", max_scored=args.evals
        ),
        tmp / "slack.db",
    )
    starts[f"stage 2 at {args.slack:g}x budget"] = r2.arch
    print(f"stage 2 at {args.slack:g}x budget: {r2.psnr:.3f} dB at {r2.latency_ms:.2f} ms")
    for label, arch in starts.items():
        sub = net.get_active_subnet(arch).eval()
        for sampler in ("gp", "tpe"):
            t0 = time.perf_counter()
            r3 = search_pruning(
                sub,
                predictor,
                memo.scorer,
                budget,
                args.stage3,
                tmp / f"s3-{len(out)}.db",
                floors=space_floors(space),
                sampler=sampler,
            )
            row = {
                "start": arch.to_dict(),
                "sampler": sampler,
                "psnr": r3.psnr,
                "latency_ms": r3.latency_ms,
                "n_feasible": r3.n_feasible,
                "pruned_arch": r3.prune.pruned_arch().to_dict(),
                "wall_s": time.perf_counter() - t0,
            }
            out[f"{label} / {sampler}"] = row
            print(
                f"  {label:>24} {sampler}: {r3.psnr:.3f} dB at {r3.latency_ms:.2f} ms "
                f"({r3.n_feasible}/{r3.n_trials} feasible, {row['wall_s']:.0f} s); pruned "
                f"{r3.prune.pruned_arch().to_json()}",
                flush=True,
            )
    return out


if __name__ == "__main__":
    main()
