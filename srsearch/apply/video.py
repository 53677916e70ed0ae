"""Videos for `srsearch upscale`: read and written frame by frame with OpenCV at the input's
frame rate; the output goes to a temporary file that replaces ``out`` only when every frame is
written, so an interrupted run leaves no half video."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srsearch.apply.upscaler import Upscaler, compare_path, side_by_side
from srsearch.common.errors import UserError

# Containers OpenCV's FFmpeg backend reads; the ones it writes, with the codec used for each.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg")
VIDEO_WRITERS: dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
DEFAULT_FPS = 30.0  # when a video does not say its frame rate




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
