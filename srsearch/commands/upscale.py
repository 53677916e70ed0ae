"""`srsearch upscale`: apply a model to an image, a folder of images or a video."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale an image, a folder of images or a video with a trained model",
        description="Run MODEL (an exported .tflite, a model.pt or a run directory) on every "
        "frame of INPUT. A .tflite file runs tile by tile on frames larger than its fixed "
        "input, with the exact whole-frame result. Video keeps its frame rate (OpenCV).",
    )
    p.add_argument("model", metavar="MODEL", help="a .tflite file, a model.pt or a run directory")
    p.add_argument(
        "input", metavar="INPUT", type=Path, help="an image, a folder of images or a video file"
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="OUTPUT",
        help="an image file, a folder (for a folder INPUT) or a .mp4/.avi/.mov file",
    )
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        choices=(2, 3, 4),
        help="expected factor; refused if the model's differs (default: the model's)",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the model (default: 2)")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also write a side-by-side (bicubic | model) next to OUTPUT: x.png -> "
        "x.compare.png, a folder -> OUTPUT/compare/",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.apply.upscale import upscale
    from srsearch.common.errors import UserError

    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: give 1 or more")
    r = upscale(
        args.model,
        args.input,
        args.out,
        scale=args.scale,
        threads=args.threads,
        compare=args.compare,
    )
    line = (
        f"{r['frames']} frame(s) x{r['scale']} with {r['model']}: {r['frames_per_s']:.1f} "
        f"frames/s, model {r['model_ms']:.1f} ms/frame"
    )
    if "fps_video" in r:
        line += f"; video {r['size'][0]}x{r['size'][1]} at {r['fps_video']:g} fps"
    print(line)
    print(f"wrote {r['out']}" + (f" and {r['compare']}" if "compare" in r else ""))
    return 0
