"""Where int8 pays on this host: fp32 vs int8 LiteRT latency of one 3x3 conv C -> C (+ ReLU)
at 640x360 (the LR frame of a 1280x720 x2 output), NHWC, 2 threads, for C = 8 ... 64.

    python benchmarks/int8_vs_width.py [--threads 2] [--runs 15]

int8 is PT2E static quantisation (`srsearch.deploy.tflite.convert(precision="int8")`, calibrated on
random inputs: timing does not depend on the values). Prints the machine, each width's medians,
the int8/fp32 ratio and the fp32 throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from android_bench import HostDevice  # noqa: E402
from srsearch.deploy import tflite  # noqa: E402

H, W = 360, 640


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--widths", default="8,12,16,24,32,48,64")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    widths = [int(c) for c in args.widths.split(",")]
    print(f"machine: {machine()}")
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in widths:
            torch.manual_seed(c)
            m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU()).eval()
            rep = [torch.rand(1, c, H, W) for _ in range(4)]
            for prec in ("fp32", "int8"):
                files[(c, prec)] = tflite.convert(
                    m,
                    (1, c, H, W),
                    Path(tmp) / f"c{c}_{prec}.tflite",
                    channels_last_io=True,
                    precision=prec,
                    representative=rep if prec == "int8" else None,
                    check=False,
                )
        results = HostDevice(args.threads).benchmark(list(files.values()), runs=args.runs)
    ms = {k: r.median_ms for k, r in zip(files, results, strict=True)}
    print(f"3x3 conv C->C + ReLU at {W}x{H}, {args.threads} threads, median of {args.runs} runs")
    print("   C   fp32 ms   int8 ms   int8/fp32   fp32 GMAC/s")
    for c in widths:
        f, q = ms[(c, "fp32")], ms[(c, "int8")]
        print(f"{c:4d}  {f:8.2f}  {q:8.2f}  {q / f:10.2f}  {c * c * 9 * H * W / f / 1e6:12.0f}")


if __name__ == "__main__":
    main()
