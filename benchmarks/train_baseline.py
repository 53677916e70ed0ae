"""Train a baseline on `builtin` and score it against bicubic on held-out natural photos.

The foundation issue's acceptance run:
    python benchmarks/train_baseline.py --arch espcn --steps 3000
prints wall time, Y-PSNR on the builtin val split, on photos outside builtin and sun80, and on
sun80's last 10 (when ../shared/datasets/sun80 exists), each with bicubic alongside.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, outside_photos, sun80_last10  # noqa: E402

from srsearch.data.datasets import load_images  # noqa: E402
from srsearch.evaluation.evaluate import evaluate  # noqa: E402
from srsearch.models import inference_form, preset_config, preset_lr  # noqa: E402
from srsearch.models.modelio import load_model_file  # noqa: E402
from srsearch.train.training import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="espcn")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="srsearch-bench-"))
    out = args.out or tmp / "run"
    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    cfg = TrainConfig(
        data="builtin",
        scale=args.scale,
        max_steps=args.steps,
        lr=preset_lr(args.arch),
        val_every=max(1, args.steps // 3),
    )
    train(preset_config(args.arch, args.scale), cfg, out, resume=True)
    wall = time.perf_counter() - t0
    print(f"train {args.arch} x{args.scale}, {args.steps} steps: {wall / 60:.1f} min wall")
    model = inference_form(load_model_file(out / "model.pt")[0])
    sets = {
        "builtin val": ("builtin", "val"),
        "outside (china, flower, grace_hopper)": (str(outside_photos(tmp / "outside")), "all"),
    }
    sun = sun80_last10(tmp / "sun80_last10")
    if sun:
        sets["sun80 last 10"] = (str(sun), "all")
    for name, (spec, split) in sets.items():
        res = evaluate(model, load_images(spec, args.scale, split), args.scale)["mean"]
        print(
            f"{name:<40} {args.arch} {res['psnr']:.3f} dB / {res['ssim']:.4f}   bicubic "
            f"{res['psnr_bicubic']:.3f} dB / {res['ssim_bicubic']:.4f}   "
            f"gain {res['psnr'] - res['psnr_bicubic']:+.3f} dB"
        )


if __name__ == "__main__":
    main()
