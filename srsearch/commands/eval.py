"""`srsearch eval`: per-image and mean PSNR/SSIM with bicubic alongside."""

from __future__ import annotations

import argparse
from pathlib import Path

from srsearch.commands._common import add_data_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM of a model on a dataset, bicubic alongside",
        description="Evaluate on the Y channel (BT.601), border shave = scale, "
        "model output rounded to uint8; writes JSON.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="model.pt, a run directory, a .tflite file, a config JSON, or a preset ('bicubic')",
    )
    add_data_flags(p)
    p.add_argument(
        "--split",
        default="all",
        choices=("all", "train", "val"),
        help="which split of --data (default: all)",
    )
    p.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of Y")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT.json",
        help="where to write results (default: eval_<model>_x<scale>.json)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srsearch.common.atomic import write_json
    from srsearch.common.errors import UserError
    from srsearch.common.outpaths import check_out_file
    from srsearch.data.datasets import load_images
    from srsearch.deploy.resolve import resolve_model
    from srsearch.evaluation.evaluate import evaluate, format_table
    from srsearch.models import inference_form

    model, name = resolve_model(args.model, args.scale)
    model_scale = int(model.config()["scale"])
    if model_scale != args.scale:
        raise UserError(f"model {args.model} is x{model_scale} but --scale is {args.scale}")
    out = check_out_file(args.json or Path(f"eval_{name}_x{args.scale}.json"), "--json")
    images = load_images(args.data, args.scale, args.split)
    result = evaluate(inference_form(model), images, args.scale, rgb=args.rgb, progress=True)
    result.update(model=str(args.model), data=args.data)
    print(format_table(result, name))
    write_json(out, result)
    print(f"wrote {out}")
    return 0
