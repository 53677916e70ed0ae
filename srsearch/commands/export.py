"""`srsearch export`: a trained model -> a checked LiteRT `.tflite` file and its JSON sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to a checked LiteRT .tflite file (fp32, fp16 or int8)",
        description="Convert the model's inference form with litert-torch at a static input "
        "size, check the file against PyTorch (random and real input), report Y-PSNR on the val "
        "split (the drop int8/fp16 costs), screen it for the LiteRT GPU delegate, and write "
        "FILE.json next to FILE.tflite. See docs/export.md.",
    )
    p.add_argument(
        "--tflite",
        required=True,
        metavar="MODEL",
        help="run directory, model.pt, config JSON or preset name to export",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE.tflite")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="fp32; fp16 weights; int8 static PTQ calibrated on the train split of "
        "--data (default: fp32)",
    )
    p.add_argument(
        "--input-size",
        default=None,
        metavar="WxH",
        help="LR input size of the file (default: the LR frame of a 1280x720 output, "
        "rounded up: 640x360 at x2, 427x240 at x3, 320x180 at x4)",
    )
    p.add_argument(
        "--data",
        default="builtin",
        metavar="SPEC",
        help="images for the real-input check, int8 calibration (train split) and "
        "PSNR (val split): 'builtin', a folder, or div2k:ROOT (default: builtin)",
    )
    p.add_argument(
        "--scale",
        type=int,
        default=2,
        choices=(2, 3, 4),
        help="scale of a preset or config JSON (a saved model knows its own)",
    )
    p.add_argument(
        "--layout",
        default="nhwc",
        choices=("nhwc", "nchw"),
        help="input/output layout of the file (default: nhwc, a camera frame)",
    )
    p.add_argument(
        "--no-depth-to-space",
        dest="depth_to_space",
        action="store_false",
        help="lower pixel shuffle to RESHAPE/TRANSPOSE instead of DEPTH_TO_SPACE",
    )
    p.add_argument(
        "--allow-cpu-ops",
        action="store_true",
        help="keep a file with ops the GPU delegate lacks or tensors of rank > 4",
    )
    p.add_argument(
        "--calib-samples",
        type=int,
        default=16,
        metavar="N",
        help="int8 calibration inputs, crops of the input size (default: 16)",
    )
    p.add_argument(
        "--val-images",
        type=int,
        default=8,
        metavar="N",
        help="val images for the PSNR check (default: 8)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.common.errors import UserError
    from srsearch.deploy.export import check_output, export_tflite, parse_size
    from srsearch.deploy.resolve import resolve_model

    if Path(args.tflite).suffix == ".tflite":
        raise UserError(
            f"--tflite {args.tflite} is already a LiteRT file; give the model.pt or "
            "run directory it was exported from"
        )
    if args.calib_samples < 1 or args.val_images < 1:
        raise UserError("--calib-samples and --val-images must be at least 1")
    if Path(args.out).suffix != ".tflite":
        raise UserError(f"--out {args.out}: give a path ending in .tflite")
    check_output(args.out, args.tflite)  # before loading and converting anything
    model, name = resolve_model(args.tflite, args.scale)
    export_tflite(
        model,
        args.out,
        input_size=parse_size(args.input_size) if args.input_size else None,
        precision=args.precision,
        data=args.data,
        layout=args.layout,
        depth_to_space=args.depth_to_space,
        allow_cpu_ops=args.allow_cpu_ops,
        calib_samples=args.calib_samples,
        val_images=args.val_images,
        source=str(args.tflite),
    )
    return 0
