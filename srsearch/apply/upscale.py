"""Apply a trained SR model to a user's own images, folders of images and videos.

The model is what `srsearch eval` takes: an exported `.tflite` (the file that ships; run tile by
tile by `srsearch.deploy.tflite_model.TFLiteModel`, so any frame at least as large as its static
input gives the whole-frame result exactly), a `model.pt` or a run directory holding one. Images are
decoded like every dataset image (`srsearch.data.image_io.read_rgb8`: grayscale and palette to RGB,
alpha dropped, 16-bit to 8-bit) and written as 8-bit RGB. Videos are read and written frame by
frame with OpenCV at the input's frame rate; the output goes to a temporary file that replaces
``out`` only when every frame is written, so an interrupted run leaves no half video.

Frames smaller than a `.tflite` file's input are padded (edge pixels repeated) up to it and the
output cropped back: the only case where the result is not the exact whole-frame one (near the
padded edges), which is said once.

The model wrapper is `srsearch.apply.upscaler.Upscaler`; video reading and writing is
`srsearch.apply.video`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from srsearch.apply.upscaler import Upscaler, compare_path, load_upscaler, side_by_side
from srsearch.apply.video import VIDEO_EXTENSIONS, VIDEO_WRITERS, open_video, upscale_video
from srsearch.common.errors import UserError
from srsearch.data.image_io import IMAGE_EXTENSIONS, ImageReadError, read_rgb8

__all__ = ["Upscaler", "check_output", "input_kind", "load_upscaler", "open_video", "upscale",
           "upscale_images", "upscale_video"]


# --------------------------------------------------------------------------------------------
# Checks before any work


def input_kind(path: Path) -> str:
    """'image', 'folder' or 'video', from the path; UserError for anything else."""
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise UserError(f"input {path} does not exist")
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise UserError(
        f"input {path}: unsupported extension {ext or '(none)'!r}; give an image "
        f"({', '.join(IMAGE_EXTENSIONS)}), a folder of them or a video "
        f"({', '.join(VIDEO_EXTENSIONS)})"
    )


def check_output(out: Path, kind: str, source: Path) -> None:
    """Refuse an output path that cannot be written, before any frame is computed.

    ``kind`` is the input's (image, folder or video): a file of a matching format for an image
    or a video, a folder for a folder. The input itself is never written over.
    """
    out = Path(out)
    if kind == "folder":
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; the input is a folder, give a folder")
        if out.resolve() == source.resolve():
            raise UserError(f"--out {out} is the input folder; give another folder")
    else:
        exts = IMAGE_EXTENSIONS if kind == "image" else tuple(VIDEO_WRITERS)
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name ending in {exts[0]}")
        if out.suffix.lower() not in exts:
            what = "an image" if kind == "image" else "a video"
            raise UserError(f"--out {out}: {what} output must end in one of {', '.join(exts)}")
        if out.exists() and out.resolve() == source.resolve():
            raise UserError(f"--out {out} is the input; give another file name")
    parent = out.parent if kind != "folder" else out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: folder {parent} is not writable; choose another --out")


# --------------------------------------------------------------------------------------------
# Images


def _read_image(path: Path) -> np.ndarray:
    try:
        return read_rgb8(path)
    except (ImageReadError, OSError) as exc:
        raise UserError(f"input {path}: {exc}; give a readable image") from None


def _write_image(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        Image.fromarray(rgb).save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def upscale_images(
    up: Upscaler,
    pairs: list[tuple[Path, Path]],
    compare: bool,
    compare_dir: Path | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    *,
    skip_unreadable: bool = False,
) -> list[str]:
    """Upscale each (input, output) pair; returns the inputs skipped as unreadable when
    ``skip_unreadable`` (a folder), else an unreadable input is a UserError."""
    skipped = []
    for i, (src, dst) in enumerate(pairs, 1):
        try:
            lr = _read_image(src)
        except UserError:
            if not skip_unreadable:
                raise
            skipped.append(str(src))
            continue
        sr = up(lr)
        _write_image(dst, sr)
        if compare:
            side = side_by_side(lr, sr, up.scale, up.name)
            _write_image(compare_dir / dst.name if compare_dir else compare_path(dst), side)
        if on_frame:
            on_frame(i, len(pairs))
    return skipped


def _progress_bar(console: Any) -> Any:
    """The srsearch bar plus frames/s and the measured model time per frame."""
    from rich.progress import TextColumn

    from srsearch.common.progress import bar_progress

    return bar_progress(
        console,
        extra=(TextColumn("{task.fields[fps]}"), TextColumn("{task.fields[model_ms]}")),
    )


def upscale(
    model: str,
    src: Path,
    out: Path,
    *,
    scale: int | None = None,
    threads: int = 2,
    compare: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`srsearch upscale`: check the paths, load the model, upscale ``src`` into ``out``.

    Returns what was done: frames, wall seconds, frames per second, mean model ms per frame,
    the model's scale and name, fps of a video, skipped files of a folder.
    """
    src, out = Path(src), Path(out)
    kind = input_kind(src)
    check_output(out, kind, src)
    if compare:
        check_output(compare_path(out), kind, src)
    pairs: list[tuple[Path, Path]] = []
    if kind == "folder":
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UserError(f"input {src}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        pairs = [(p, out / p.name) for p in files]
    elif kind == "image":
        pairs = [(src, out)]
        _read_image(src)  # unreadable: fail before the model loads
    up = load_upscaler(model, scale, threads)

    from rich.console import Console

    console = Console()
    bar = _progress_bar(console) if progress else None
    t0 = time.perf_counter()
    task = None

    def on_frame(done: int, total: int | None) -> None:
        if bar is None:
            return
        fps = done / max(1e-9, time.perf_counter() - t0)
        bar.update(task, completed=done, total=total, fps=f"{fps:.1f} frames/s",
                   model_ms=f"model {up.model_ms:.1f} ms/frame")

    result: dict[str, Any] = {"model": up.name, "scale": up.scale, "kind": kind, "out": str(out)}
    if bar is not None:
        bar.__enter__()
        task = bar.add_task("upscaling", total=len(pairs) or None, fps="", model_ms="")
    try:
        if kind == "video":
            info = upscale_video(up, src, out, compare, on_frame)
            result.update(fps_video=info.fps, size=[info.width * up.scale, info.height * up.scale])
        else:
            cdir = compare_path(out) if compare and kind == "folder" else None
            result["skipped"] = upscale_images(
                up, pairs, compare, cdir, on_frame, skip_unreadable=kind == "folder"
            )
            if up.frames == 0:
                raise UserError(f"input {src}: none of its {len(pairs)} images could be read")
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    wall = time.perf_counter() - t0
    for note in up.notes:
        log(f"note: {note}")
    for path in result.get("skipped", []):
        log(f"skipped {path}: not a readable image")
    result.update(
        frames=up.frames,
        wall_s=wall,
        frames_per_s=up.frames / wall if wall > 0 else float("nan"),
        model_ms=up.model_ms,
    )
    if compare:
        result["compare"] = str(compare_path(out))
    return result
