"""PReLU as one PRELU op vs litert-torch's RELU/SUB/MUL/MUL: latency of the PReLU baselines.

    python benchmarks/prelu_lowering.py [--threads 2] [--runs 15] [--rounds 5]

Each baseline's inference form (`srsearch.models.inference_form`, the module `srsearch export`
converts) is converted at LR 640x360 (x2 to 1280x720), NHWC with DEPTH_TO_SPACE, twice: with
`convert(native_prelu=True)` (the default) and with ``native_prelu=False``. A ReLU twin (same
convs, ReLU instead of PReLU, which XNNPACK fuses into the conv) gives the floor no activation
op can beat. Files are timed with `HostDevice(isolate=False)` in ``--rounds`` round-robin passes
(order reversed every other pass); a figure is the median of the per-pass medians. Weights are
random (PReLU slopes 0.25): latency does not depend on their values.

Prints the op histograms, a latency table and the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from android_bench import HostDevice  # noqa: E402
from srsearch.deploy import tflite  # noqa: E402
from srsearch.deploy._prelu import replace_prelus  # noqa: E402
from srsearch.models import build_model, inference_form, preset_config  # noqa: E402

MODELS = ("ecbsr-m4c8", "ecbsr-m4c16", "ecbsr-m4c32", "fsrcnn-s", "fsrcnn")
FORMS = ("native", "decomposed", "relu twin")


def relu_twin(module: nn.Module) -> nn.Module:
    return replace_prelus(module, lambda _: nn.ReLU())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args()

    shape = (1, 3, 360, 640)
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[tuple[str, str], Path] = {}
        for name in args.models:
            torch.manual_seed(0)
            module = inference_form(build_model(preset_config(name, 2))).eval()
            variants = {"native": (module, True), "decomposed": (module, False),
                        "relu twin": (relu_twin(module), True)}
            for form, (m, native) in variants.items():
                f = Path(tmp) / f"{name}-{form.replace(' ', '_')}.tflite"
                tflite.convert(m, shape, f, channels_last_io=True, depth_to_space=True,
                               native_prelu=native, check=False)
                files[(name, form)] = f
                print(f"{name:12s} {form:10s} {tflite.op_histogram(f)}", flush=True)

        device = HostDevice(args.threads, isolate=False)
        per: dict[tuple[str, str], list[float]] = {k: [] for k in files}
        keys = list(files)
        for r in range(args.rounds):
            order = keys if r % 2 == 0 else keys[::-1]
            results = device.benchmark([files[k] for k in order], runs=args.runs, warmup=2)
            for k, res in zip(order, results, strict=True):
                per[k].append(res.median_ms)
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    ms = {k: statistics.median(v) for k, v in per.items()}
    print(f"\n## 720p output (LR 640x360, x2), {args.threads} threads, median of "
          f"{args.rounds} rounds x {args.runs} runs, ms; load {os.getloadavg()[0]:.1f}")
    print("| model | native PRELU | decomposed | change | ReLU twin |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        n, d, r = (ms[(name, f)] for f in FORMS)
        print(f"| {name} | {n:.1f} | {d:.1f} | {100 * (n / d - 1):+.0f} % | {r:.1f} |")
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
