"""`srsearch upscale` on a 10-second 640x360 clip: frames per second and model ms per frame.

    python benchmarks/upscale_video.py [--model espcn] [--threads 2] [--seconds 10]

Makes a synthetic clip (smooth colour fields and blobs drifting across the frame, 30 fps,
written with OpenCV; nothing is downloaded), exports the preset ``--model`` (untrained weights:
speed does not depend on their values) to an fp32 NHWC ``.tflite`` at two input sizes, and
upscales the clip x2 to 1280x720 with each:

- the clip's own 640x360 (one tile per frame: the deployment case),
- 256x256 (the frame is covered by overlapping tiles: what a file exported for another size does).

Prints, per file: frames, wall frames/s (decode + model + encode), the model's mean ms per frame
(LiteRT only), the tile count, and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from srsearch.apply.upscale import upscale  # noqa: E402
from srsearch.common.quiet import quiet_library_logs  # noqa: E402
from srsearch.deploy.export import export_tflite  # noqa: E402
from srsearch.deploy.tflite_model import tile_starts  # noqa: E402
from srsearch.models import build_model, preset_config  # noqa: E402

W, H, FPS = 640, 360, 30


def make_clip(path: Path, seconds: float) -> int:
    """A drifting synthetic scene; returns the frame count."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0 : W * 2].astype(np.float32)
    scene = np.zeros((H, W * 2, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.3)]
        scene[..., c] = 128 + 60 * np.sin(fx * xx + ph) * np.cos(fy * yy)
    for _ in range(40):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, 2 * W), rng.uniform(6, 60)
        scene[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    n = int(seconds * FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(n):
        x0 = int(i * W / n)  # pans half the scene over the clip
        writer.write(np.ascontiguousarray(scene[:, x0 : x0 + W, ::-1]))
    writer.release()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="espcn", help="preset to export (default: espcn)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    quiet_library_logs()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = make_clip(tmp / "clip.mp4", args.seconds)
        print(f"clip: {n} frames {W}x{H} at {FPS} fps; model {args.model} x2 -> {2 * W}x{2 * H}")
        model = build_model(preset_config(args.model, 2)).eval()
        rows = []
        for tile in ((W, H), (256, 256)):
            path = tmp / f"{args.model}_{tile[0]}x{tile[1]}.tflite"
            export_tflite(model, path, input_size=tile, val_images=1, log=lambda m: None)
            t0 = time.perf_counter()
            r = upscale(str(path), tmp / "clip.mp4", tmp / f"out_{tile[0]}.mp4",
                        threads=args.threads, progress=sys.stdout.isatty(), log=print)
            wall = time.perf_counter() - t0
            rf = json.loads(path.with_suffix(".json").read_text())["receptive_field"]
            tiles = len(tile_starts(H, tile[1], rf)) * len(tile_starts(W, tile[0], rf))
            rows.append((f"{tile[0]}x{tile[1]}", tiles, r["frames"], r["frames"] / wall,
                         r["model_ms"]))
        print(f"{'file input':<12}{'tiles':>6}{'frames':>8}{'frames/s':>10}{'model ms':>10}")
        for name, tiles, frames, fps, ms in rows:
            print(f"{name:<12}{tiles:>6}{frames:>8}{fps:>10.1f}{ms:>10.2f}")
    print(f"threads {args.threads}; machine: {machine()}")


if __name__ == "__main__":
    main()
