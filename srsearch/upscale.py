"""Apply a trained SR model to a user's own images, folders of images and videos.

The model is what `srsearch eval` takes: an exported `.tflite` (the file that ships; run tile by
tile by `srsearch.tflite_model.TFLiteModel`, so any frame at least as large as its static input
gives the whole-frame result exactly), a `model.pt` or a run directory holding one. Images are
decoded like every dataset image (`srsearch._imageio.read_rgb8`: grayscale and palette to RGB,
alpha dropped, 16-bit to 8-bit) and written as 8-bit RGB. Videos are read and written frame by
frame with OpenCV at the input's frame rate; the output goes to a temporary file that replaces
``out`` only when every frame is written, so an interrupted run leaves no half video.

Frames smaller than a `.tflite` file's input are padded (edge pixels repeated) up to it and the
output cropped back: the only case where the result is not the exact whole-frame one (near the
padded edges), which is said once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srsearch._imageio import IMAGE_EXTENSIONS, ImageReadError, bicubic_upscale, read_rgb8
from srsearch.errors import UserError
from srsearch.metrics import tensor_to_uint8

# Containers OpenCV's FFmpeg backend reads; the ones it writes, with the codec used for each.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg")
VIDEO_WRITERS: dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
DEFAULT_FPS = 30.0  # when a video does not say its frame rate


@dataclass
class Upscaler:
    """A model ready to upscale uint8 RGB frames; keeps the time spent in the model.

    Attributes:
        model: The inference-form module (a `TFLiteModel` for `.tflite` files).
        name: What to call it in messages and the comparison's label.
        scale: Its upscaling factor.
        notes: Messages for the user, each said once (see `say`).
    """

    model: nn.Module
    name: str
    scale: int
    model_seconds: float = 0.0
    frames: int = 0
    notes: list[str] = field(default_factory=list)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H*s, W*s, 3) uint8 RGB."""
        h, w = lr.shape[:2]
        padded = self._pad_to_tile(lr)
        x = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)  # a writable copy
        x /= 255.0
        t0 = time.perf_counter()
        with torch.no_grad():
            y = self.model(torch.from_numpy(x)[None])  # (1, 3, H, W) -> (1, 3, H*s, W*s)
        self.model_seconds += time.perf_counter() - t0
        self.frames += 1
        return tensor_to_uint8(y)[: h * self.scale, : w * self.scale]

    @property
    def model_ms(self) -> float:
        """Mean time in the model per frame so far (ms), conversions and file I/O excluded."""
        return 1000.0 * self.model_seconds / max(1, self.frames)

    def _pad_to_tile(self, lr: np.ndarray) -> np.ndarray:
        tile = getattr(self.model, "tile_size", None)  # (h, w) of a static-shape file
        if tile is None or (lr.shape[0] >= tile[0] and lr.shape[1] >= tile[1]):
            return lr
        note = (
            f"frames of {lr.shape[1]}x{lr.shape[0]} are smaller than {self.name}'s fixed input "
            f"{tile[1]}x{tile[0]}: they are padded (edges repeated), so pixels near the padded "
            "edges differ slightly from an exact run; export with a smaller --input-size for "
            "an exact one"
        )
        if note not in self.notes:
            self.notes.append(note)
        ph, pw = max(0, tile[0] - lr.shape[0]), max(0, tile[1] - lr.shape[1])
        return np.pad(lr, ((0, ph), (0, pw), (0, 0)), mode="edge")


def load_upscaler(spec: str, scale: int | None = None, threads: int = 2) -> Upscaler:
    """The model of `srsearch upscale MODEL`: a `.tflite`, a `model.pt` or a run directory.

    Args:
        spec: The MODEL argument.
        scale: The factor the user expects; None takes the model's. A preset (e.g. bicubic)
            is built at this scale (default 2).
        threads: LiteRT (`.tflite`) or PyTorch CPU threads.

    Raises:
        UserError: no such model, or its scale is not ``scale``.
    """
    from srsearch.models import inference_form

    if Path(spec).suffix == ".tflite":
        from srsearch.tflite_model import TFLiteModel

        model: nn.Module = TFLiteModel(Path(spec), threads=threads).eval()
        name = Path(spec).stem
    else:
        from srsearch.modelio import resolve_model

        torch.set_num_threads(threads)
        model, name = resolve_model(spec, scale or 2)
        model = inference_form(model).eval()
    model_scale = int(model.config()["scale"])
    if scale is not None and scale != model_scale:
        raise UserError(
            f"model {spec} is x{model_scale} but --scale is {scale}; drop --scale or give a "
            f"x{scale} model"
        )
    return Upscaler(model, name, model_scale)


def side_by_side(lr: np.ndarray, sr: np.ndarray, scale: int, name: str) -> np.ndarray:
    """(bicubic | model) of one frame, each half labelled in its top-left corner."""
    import cv2

    halves = [bicubic_upscale(np.ascontiguousarray(lr), scale), np.array(sr, order="C")]
    for half, label in zip(halves, ("bicubic", name), strict=True):
        size = max(0.4, half.shape[0] / 720)
        for color, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined, readable anywhere
            cv2.putText(half, label, (8, int(24 * size) + 4), cv2.FONT_HERSHEY_SIMPLEX, size,
                        color, width, cv2.LINE_AA)
    return np.concatenate(halves, axis=1)


def compare_path(out: Path) -> Path:
    """Where ``--compare`` writes next to ``out``: ``x.png`` -> ``x.compare.png``; a folder
    ``d`` -> ``d/compare``."""
    return out / "compare" if not out.suffix else out.with_name(f"{out.stem}.compare{out.suffix}")


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


# --------------------------------------------------------------------------------------------
# Video


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int | None  # as the container says; None when it does not
    width: int
    height: int


def open_video(path: Path) -> tuple[Any, VideoInfo, np.ndarray]:
    """An OpenCV capture positioned after its first frame, the video's info and that frame
    (RGB): a file OpenCV cannot decode fails here, before any output is made."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(
            f"input {path}: OpenCV cannot open it as a video (damaged, or a container its "
            "FFmpeg does not read); convert it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`"
        )
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise UserError(
            f"input {path}: no frame could be decoded (a codec OpenCV's FFmpeg lacks?); "
            "convert it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`"
        )
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    info = VideoInfo(
        fps=fps if np.isfinite(fps) and fps > 0 else DEFAULT_FPS,
        frames=count if count > 0 else None,
        width=first.shape[1],
        height=first.shape[0],
    )
    return cap, info, np.ascontiguousarray(first[:, :, ::-1])


def _frames(cap: Any, first: np.ndarray) -> Iterator[np.ndarray]:
    yield first
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB


class _VideoOut:
    """An OpenCV writer into a temporary file next to ``path``, moved there by `commit`."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        import cv2

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.name}.partial{path.suffix}")
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_WRITERS[path.suffix.lower()])
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, (width, height))
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise UserError(f"--out {path}: OpenCV cannot write this format here; try .mp4 or .avi")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def commit(self) -> None:
        self.writer.release()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


def upscale_video(
    up: Upscaler,
    src: Path,
    out: Path,
    compare: bool,
    on_frame: Callable[[int, int | None], None] | None = None,
) -> VideoInfo:
    """Upscale every frame of ``src`` into ``out`` (and its ``--compare`` twin) at the input's
    frame rate. Returns the input's info."""
    cap, info, first = open_video(src)
    s = up.scale
    writers = [_VideoOut(out, info.fps, info.width * s, info.height * s)]
    try:
        if compare:
            writers.append(_VideoOut(compare_path(out), info.fps, 2 * info.width * s,
                                     info.height * s))
        for i, lr in enumerate(_frames(cap, first), 1):
            sr = up(lr)
            writers[0].write(sr)
            if compare:
                writers[1].write(side_by_side(lr, sr, s, up.name))
            if on_frame:
                on_frame(i, info.frames)
    except BaseException:
        for w in writers:
            w.discard()
        raise
    finally:
        cap.release()
    for w in writers:
        w.commit()
    return info


# --------------------------------------------------------------------------------------------
# Entry point


def _progress_bar(console: Any) -> Any:
    """The srsearch bar plus frames/s and the measured model time per frame."""
    from rich.progress import TextColumn

    from srsearch.progress import bar_progress

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
