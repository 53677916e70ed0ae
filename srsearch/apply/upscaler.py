"""The model behind `srsearch upscale`: `Upscaler` (a `.tflite` file run tile by tile, or a
PyTorch model) and `load_upscaler`, plus the side-by-side (bicubic | model) frame of
``--compare``. Images and videos are handled in `srsearch.apply.upscale` and
`srsearch.apply.video`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srsearch.common.errors import UserError
from srsearch.data.image_io import bicubic_upscale
from srsearch.evaluation.metrics import tensor_to_uint8


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
        from srsearch.deploy.tflite_model import TFLiteModel

        model: nn.Module = TFLiteModel(Path(spec), threads=threads).eval()
        name = Path(spec).stem
    else:
        from srsearch.deploy.resolve import resolve_model

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
