"""How steady is a file's time at the latency table's speed? Times a pipeline run's exported
files beside its search's final anchors in several sessions (as the bench stage does) and
prints, per file and per session, the time as read, divided by the session's speed (the
anchors' median measured / predicted over the whole session: what the check, the bench stage
and compare used until session 16) and divided round by round (each round's median by that
round's anchor speed, then the median over rounds: `srsearch.search.run.at_table_speed`, what
they use since), then each one's spread over sessions.

    python benchmarks/anchor_speed.py --run runs/<timestamp> --sessions 6

Session 15 added it: in one main job the delivered file read 27.06, 34.48 and 26.24 ms at the
table's speed (session factor) within 15 minutes, one of its sessions with rounds of 21.5,
30.2 and 31.7 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished `srsearch pipeline` run")
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--runs", type=int, default=20, help="runs per file per round")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per session (the "
                    "bench stage and the check use srsearch.search.run.ANCHOR_ROUNDS, 7)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from android_bench import device_from_target
    from srsearch.latency import LatencyModel
    from srsearch.search.run import at_table_speed, run_anchors, time_beside_anchors

    files = sorted((args.run / "export").glob("*.tflite"))
    anchors = run_anchors(args.run / "search")
    if not files or len(anchors) < 5:
        sys.exit(f"--run {args.run}: needs export/*.tflite and a search that timed 5 or more "
                 "anchors (summary.json measured.anchors); run `srsearch pipeline` first")
    predictor = LatencyModel.load(args.run / "latency" / "lut.json")
    device = device_from_target("host", threads=args.threads)
    print(f"machine: {machine()}; {device.fingerprint_id()}; {len(files)} files beside "
          f"{len(anchors)} anchors, {args.sessions} sessions x {args.rounds} rounds x {args.runs} "
          "runs",
          flush=True)
    by: dict[str, dict[str, list[float]]] = {f.stem: {"read": [], "session": [], "round": []}
                                             for f in files}
    for k in range(args.sessions):
        own, timed = time_beside_anchors(files, device, anchors, predictor,
                                         tuple(predictor.lr_hw), args.run / "bench" / "anchors",
                                         predictor.export_spec, runs=args.runs,
                                         rounds=args.rounds)
        speed = timed["speed"]
        print(f"session {k}: speed {speed:.3f}x, by round "
              f"{', '.join(f'{v:.3f}' for v in timed['round_speeds'])}", flush=True)
        for f, r in zip(files, own, strict=True):
            row = by[f.stem]
            ms = at_table_speed(r, timed)
            row["read"].append(r.median_ms)
            row["session"].append(r.median_ms / speed)
            row["round"].append(ms)
            rounds = ", ".join(f"{x:.2f}" for x in r.extra["round_ms"])
            print(f"  {f.stem:<18} read {r.median_ms:6.2f}  session {r.median_ms / speed:6.2f}  "
                  f"by round {ms:6.2f}  (rounds {rounds})", flush=True)
    print("\nspread over sessions: (max - min) / mean, %; sd / mean, %")
    print(f"{'file':<18} {'read':>14} {'session':>14} {'by round':>14}")
    for name, row in by.items():
        cells = []
        for key in ("read", "session", "round"):
            v = row[key]
            mean = statistics.fmean(v)
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{100 * (max(v) - min(v)) / mean:5.1f} / {100 * sd / mean:4.1f}")
        print(f"{name:<18} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()
