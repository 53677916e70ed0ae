"""Export a trained model to a checked LiteRT file with a JSON sidecar (`srsearch export`).

Every export is checked before it is kept:

- the file against PyTorch on a random input and on a real image (`ATOL[precision]`; int8 is
  compared with PyTorch's simulation of the quantised graph inside `srsearch.deploy.tflite.convert`,
  and its cost is reported as a PSNR drop instead);
- Y-PSNR on the validation split of `--data`, PyTorch fp32 vs the file run tile by tile
  (`srsearch.deploy.tflite_model.TFLiteModel`), so the drop an int8 or fp16 file costs is a number;
- the ops and tensor ranks against what the LiteRT GPU delegate accepts
  (`srsearch.deploy.tflite.gpu_report`); a file that would fall back to the CPU fails unless the
  caller allows it.

The sidecar `FILE.json` holds what `TFLiteModel` needs to run the file on any image size
(scale, layout, receptive field) and the record of the checks.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from srsearch.common import atomic, sizes
from srsearch.common.errors import UserError
from srsearch.common.sizes import TARGET_OUTPUT, lr_size

SIDECAR_FORMAT = "srsearch.tflite/1"
# The phone use case: 720p output (srsearch.common.sizes.TARGET_OUTPUT). The LR frame is this
# divided by the scale, rounded up (x3: 427x240 -> 1281x720, one column more than 720p; crop it).
Layout = Literal["nhwc", "nchw"]

# What to do about ops the GPU delegate lacks, keyed by op; the generic fix follows.
_GPU_FIXES = {
    "BROADCAST_TO": "it comes from repeat_interleave/expand; write a channel repeat as a fixed "
    "1x1 conv (srcore.layers.LRSkip) or torch.cat",
    "CAST": "keep the graph float32 end to end (no integer indexing or dtype changes)",
    "GATHER_ND": "replace advanced indexing with slicing",
}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: dict[str, Any]


def default_input_size(scale: int) -> tuple[int, int]:
    """(W, H) of the LR frame whose x`scale` output covers 1280x720 (rounded up)."""
    h, w = lr_size(TARGET_OUTPUT, scale)
    return w, h


def parse_size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360), the LR input of ``--input-size``
    (`srsearch.common.sizes.parse_size`)."""
    return sizes.parse_size(text, "--input-size", "640x360 (WIDTHxHEIGHT of the LR input)")


def sidecar_path(tflite_path: Path) -> Path:
    """`model.tflite` -> `model.json`."""
    return Path(tflite_path).with_suffix(".json")


def check_output(out: Path, source: str | None = None) -> None:
    """Refuse an ``out`` (or its sidecar) that cannot be written or that would overwrite the
    input ``source`` (``export --tflite cfg.json --out cfg.tflite`` would write the sidecar
    ``cfg.json`` over the config it reads); run before any conversion work."""
    from srsearch.common.outpaths import check_out_file

    out = Path(out)
    check_out_file(out)
    sidecar = sidecar_path(out)
    if sidecar.is_dir():
        raise UserError(f"--out {out}: its sidecar {sidecar} is a folder; choose another --out")
    src = Path(source) if source else None
    if src is not None and src.is_dir():
        src = src / "model.pt"
    if src is not None and src.is_file():
        for what, path in (("the file", out), ("its sidecar", sidecar)):
            if path.exists() and path.resolve() == src.resolve():
                raise UserError(
                    f"--out {out}: {what} {path} would overwrite the model it exports "
                    f"({source}); choose another --out name"
                )


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def receptive_field(model: nn.Module, scale: int, *, trials: int = 4, max_size: int = 129) -> int:
    """Radius r (LR pixels) of the input window one output block depends on.

    Output pixels of LR position (y, x) depend on input pixels within [y - r, y + r] x
    [x - r, x + r] only. Measured, not derived: the input positions with a non-zero gradient
    of the centre output block, united over `trials` random inputs (a ReLU that happens to be
    off for one input hides part of the window; independent inputs reveal it).

    Raises:
        UserError: the window grows with the input (a global op), so tiling cannot be exact.
    """
    model = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(0)
    size = 33
    while size <= max_size:
        c = size // 2
        reach = 0
        for _ in range(trials):
            x = torch.rand(1, 3, size, size, generator=gen, dtype=torch.float64)
            x.requires_grad_(True)
            with torch.enable_grad():
                y = model(x)
                y[..., c * scale : (c + 1) * scale, c * scale : (c + 1) * scale].sum().backward()
            rows, cols = np.nonzero(x.grad.abs().sum(dim=(0, 1)).numpy())
            if rows.size:
                reach = max(reach, int(np.abs(rows - c).max()), int(np.abs(cols - c).max()))
        if reach < c:
            return reach
        size = 2 * size + 1
    raise UserError(
        f"{type(model).__name__}: an output pixel depends on input pixels over {max_size // 2} px "
        "away (a global op such as pooling over the whole image); such a model cannot be run "
        "tile by tile, export it at the full frame size and evaluate it in PyTorch"
    )


def fit_to(img: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width) window of an (H, W, 3) image: a random crop, mirror-padding first
    where the image is smaller."""
    h, w = img.shape[:2]
    pad_h, pad_w = max(0, height - h), max(0, width - w)
    if pad_h or pad_w:
        img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
        h, w = img.shape[:2]
    y = int(rng.integers(0, h - height + 1))
    x = int(rng.integers(0, w - width + 1))
    return img[y : y + height, x : x + width]


def _to_nchw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255.0)[None]


def export_tflite(
    model: nn.Module,
    out: Path,
    *,
    input_size: tuple[int, int] | None = None,
    precision: str = "fp32",
    data: str = "builtin",
    layout: Layout = "nhwc",
    depth_to_space: bool = True,
    allow_cpu_ops: bool = False,
    calib_samples: int = 16,
    val_images: int = 8,
    source: str = "",
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Convert `inference_form(model)`, check it (see the module docstring), write the sidecar.

    Args:
        model: A model with `config()` (as `resolve_model` returns it).
        out: Destination `.tflite`; the sidecar goes next to it (`sidecar_path`).
        input_size: (W, H) of the LR input; default `default_input_size(scale)`.
        precision: fp32, fp16 or int8 (static PTQ calibrated on the train split of `data`).
        data: Data spec for the real-image check, calibration (train) and PSNR (val).
        layout: Input/output layout of the file. NHWC is what a phone camera pipeline
            holds, and with `depth_to_space` it leaves no layout op in the graph.
        depth_to_space: Lower pixel shuffles to DEPTH_TO_SPACE when the graph allows it
            (otherwise RESHAPE/TRANSPOSE; the sidecar records which).
        allow_cpu_ops: Keep a file with ops the GPU delegate lacks or tensors of rank > 4.
        calib_samples: int8 calibration inputs (crops of the input size from train images).
        val_images: At most this many val images for the PSNR check (the first by name).
        source: What the model was loaded from, for the sidecar.
        log: Where progress lines go.

    Raises:
        UserError: the conversion, a check or the GPU screen failed; nothing is written.
    """
    from srsearch.data.datasets import load_images
    from srsearch.deploy import tflite
    from srsearch.models import inference_form

    config = model.config()
    scale = int(config["scale"])
    module = inference_form(model).eval()
    width, height = input_size or default_input_size(scale)
    shape = (1, 3, height, width)
    out = Path(out)
    if out.suffix != ".tflite":
        raise UserError(f"--out {out}: give a path ending in .tflite")
    check_output(out, source)

    rf = receptive_field(module, scale)
    log(f"receptive field: {rf} LR px each side")
    train = load_images(data, scale, "train")
    val = load_images(data, scale, "val")
    rng = np.random.default_rng(0)
    real = _to_nchw(fit_to(max(val, key=lambda im: im.lr.size).lr, width, height, rng))
    calib = []
    if precision == "int8":
        calib = [
            _to_nchw(fit_to(train[i % len(train)].lr, width, height, rng))
            for i in range(calib_samples)
        ]

    d2s = depth_to_space and _d2s_applies(module, real, log)
    # Convert and check under a temporary name: a failed check leaves the old export, if any.
    part = out.with_name(f".{out.stem}.{os.getpid()}.part.tflite")
    started = time.perf_counter()
    tflite.convert(
        module,
        shape,
        part,
        channels_last_io=layout == "nhwc",
        precision=precision,
        representative=calib,
        depth_to_space=d2s,
    )
    convert_s = time.perf_counter() - started
    log(f"converted in {convert_s:.1f} s")
    try:
        ops = tflite.op_histogram(part)
        log("ops: " + ", ".join(f"{op} {n}" for op, n in ops.items()))
        gpu = tflite.gpu_report(part)
        if not gpu.ok:
            _gpu_problem(gpu, out, allow_cpu_ops, log)
        checks = {
            "random": _compare(
                module,
                part,
                torch.rand(shape, generator=torch.Generator().manual_seed(1)),
                layout,
                precision,
            ),
            "real": _compare(module, part, real, layout, precision),
        }
        for name, c in checks.items():
            bound = (
                f"atol {c['atol']:g}, {'ok' if c['ok'] else 'FAILED'}"
                if c["atol"]
                else f"int8: not bounded; matched PyTorch's int8 simulation to {tflite.INT8_ATOL}"
            )
            log(
                f"check {name} input: max abs diff {c['max_abs_diff']:.3g} vs PyTorch fp32 "
                f"({bound})"
            )
        bad = [n for n, c in checks.items() if not c["ok"]]
        if bad:
            raise tflite.ConversionError(
                f"{out} ({precision}) disagrees with PyTorch on the {' and '.join(bad)} input "
                f"beyond atol {tflite.ATOL[precision]:g}; not written. Report the model config."
            )
        checks["psnr_val"] = _psnr_check(module, part, val[:val_images], scale, rf, log)
    except BaseException:
        part.unlink(missing_ok=True)
        raise

    sidecar = {
        "format": SIDECAR_FORMAT,
        "source": source,
        "model_config": config,
        "inference_config": module.config() if hasattr(module, "config") else None,
        "scale": scale,
        "precision": precision,
        "layout": layout,
        "input_size": [width, height],
        "input_shape": [1, height, width, 3] if layout == "nhwc" else list(shape),
        "output_size": [width * scale, height * scale],
        "receptive_field": rf,
        "pixel_shuffle": "DEPTH_TO_SPACE" if d2s else "RESHAPE/TRANSPOSE",
        "op_histogram": ops,
        "gpu_delegate": {
            "ok": gpu.ok,
            "unsupported_ops": gpu.unsupported_ops,
            "high_rank_tensors": {k: list(v) for k, v in gpu.high_rank_tensors.items()},
        },
        "checks": checks,
        "data": data,
        "calibration": {"split": "train", "samples": len(calib)} if calib else None,
        "convert_s": round(convert_s, 2),
        "versions": {
            p: importlib.metadata.version(p) for p in ("torch", "litert-torch", "ai-edge-litert")
        },
    }
    os.replace(part, out)
    atomic.write_json(sidecar_path(out), sidecar)
    log(f"wrote {out} and {sidecar_path(out)}")
    return ExportResult(out, sidecar)


def _d2s_applies(module: nn.Module, sample: torch.Tensor, log: Callable[[str], None]) -> bool:
    from srsearch.deploy.depth_to_space import depth_to_space_form
    from srsearch.deploy.tflite import ConversionError

    try:
        depth_to_space_form(module, sample)
    except ConversionError as exc:
        log(f"pixel shuffle stays RESHAPE/TRANSPOSE: {exc}")
        return False
    return True


def _gpu_problem(gpu, out: Path, allow: bool, log: Callable[[str], None]) -> None:
    lines = gpu.describe()
    if allow:
        log(f"warning: parts of {out.name} will run on the CPU, not the GPU delegate:\n{lines}")
        return
    hints = [f"{op}: {_GPU_FIXES[op]}" for op in gpu.unsupported_ops if op in _GPU_FIXES]
    if gpu.high_rank_tensors:
        hints.append(
            "rank > 4 comes from reshape/permute over more than 4 dims (a hand-written "
            "pixel shuffle, say); keep tensors (N, C, H, W) or use nn.PixelShuffle"
        )
    raise UserError(
        f"{out.name} would not run fully on the LiteRT GPU delegate:\n{lines}\n"
        + "".join(f"fix: {h}\n" for h in hints)
        + "Rewrite those layers, or pass --allow-cpu-ops to keep the file anyway (the "
        "unsupported part then runs on the CPU, with a GPU<->CPU copy at each boundary)."
    )


def _compare(
    module: nn.Module, path: Path, x: torch.Tensor, layout: str, precision: str
) -> dict[str, Any]:
    from srsearch.deploy import tflite

    want = _forward(module, x).numpy()
    inp = x.permute(0, 2, 3, 1).numpy() if layout == "nhwc" else x.numpy()
    got = tflite.run_tflite(path, inp)
    if layout == "nhwc":
        got = got.transpose(0, 3, 1, 2)
    diff = float(np.max(np.abs(got - want)))
    atol = tflite.ATOL[precision]
    # int8 is checked against its own PyTorch simulation in convert; here the difference to
    # fp32 is information, its cost is the PSNR drop.
    return {
        "max_abs_diff": diff,
        "atol": atol if precision != "int8" else None,
        "ok": precision == "int8" or diff <= atol,
    }


def _psnr_check(
    module: nn.Module, path: Path, images: list, scale: int, rf: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Mean Y-PSNR on `images`: PyTorch fp32 vs the file, tiled. Images smaller than the
    file's input are edge-padded to it for both models alike (the padding is cropped off)."""
    from srsearch.deploy.tflite_model import TFLiteModel
    from srsearch.evaluation.metrics import score_sr

    tiled = TFLiteModel(path, receptive_field=rf)
    th, tw = tiled.tile_size
    rows = []
    for im in images:
        x = _to_nchw(im.lr)
        h, w = x.shape[-2:]
        xp = torch.nn.functional.pad(x, (0, max(0, tw - w), 0, max(0, th - h)), mode="replicate")
        ref = _forward(module, xp)[..., : h * scale, : w * scale]
        got = tiled(xp)[..., : h * scale, : w * scale]
        rows.append((score_sr(ref, im.hr, scale, ssim=False)[0],
                     score_sr(got, im.hr, scale, ssim=False)[0]))
    ref_psnr, file_psnr = (float(np.mean(v)) for v in zip(*rows, strict=True))
    log(
        f"val Y-PSNR on {len(rows)} image(s): PyTorch fp32 {ref_psnr:.3f} dB, file "
        f"{file_psnr:.3f} dB, drop {round(ref_psnr - file_psnr, 3) + 0.0:.3f} dB"
    )
    return {
        "images": len(rows),
        "pytorch_fp32": ref_psnr,
        "tflite": file_psnr,
        "drop_db": round(ref_psnr - file_psnr, 4) + 0.0,
    }


