"""Run a static-shape `.tflite` SR model on images of any size, tile by tile, exactly.

A LiteRT file from `srsearch export` takes one input size. `TFLiteModel` covers a larger image
with tiles of that size that overlap by twice the model's receptive field r and keeps, from
each tile, only the output whose input window lies inside the tile; tiles at the image border
are aligned with it, so the model's zero padding falls where it does in a whole-image run.
Every kept output pixel is then computed from exactly the inputs (and padding) it sees in a
whole-image run: the tiled output equals the whole-image output up to float rounding.

It looks like an SR `nn.Module` to `srsearch.evaluation.evaluate`: float (B, 3, h, w) in [0, 1] in,
(B, 3, h*s, w*s) out, and `config()` with the scale.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srsearch.common.errors import UserError


def tile_starts(length: int, tile: int, halo: int) -> list[tuple[int, int, int]]:
    """(start, keep_from, keep_to) of each tile along one axis, in input pixels.

    Tiles are `tile` long; a tile keeps its output except `halo` pixels at each side that is
    not an image border. The kept ranges partition the axis; the last tile is aligned with the
    end of the axis, so it may overlap its neighbour by more than 2 * halo and keeps less.
    """
    if length < tile:
        raise ValueError(f"axis of {length} px is shorter than the {tile} px tile")
    if length == tile:
        return [(0, 0, tile)]
    step = tile - 2 * halo
    if step < 1:
        raise UserError(
            f"tile of {tile} px cannot cover a receptive field of {halo} px each side; export "
            f"with an input side of at least {2 * halo + 1} px (--input-size)"
        )
    starts = list(range(0, length - tile, step)) + [length - tile]
    spans, kept_to = [], 0
    for s in starts:
        end = length if s + tile == length else s + tile - halo
        spans.append((s, kept_to, end))  # kept_to >= s + halo: the previous tile reached it
        kept_to = end
    return spans


class TFLiteModel(nn.Module):
    """A `.tflite` SR model from `srsearch export`, run tile by tile on any image size.

    The scale, layout and receptive field come from the JSON sidecar next to the file. Without
    one, the scale and layout are inferred from the tensor shapes and the receptive field is
    measured on the file (perturbing one input pixel; with a warning, as that estimate can miss
    paths a ReLU closes for the inputs tried).

    Args:
        path: The `.tflite` file.
        threads: LiteRT CPU threads.
        receptive_field: Override the sidecar's value (LR pixels each side).
    """

    def __init__(self, path: Path, *, threads: int = 2, receptive_field: int | None = None) -> None:
        super().__init__()
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(
                f"model file {self.path} does not exist; export one with "
                "`srsearch export --tflite MODEL --out FILE.tflite`"
            )
        sidecar = self.path.with_suffix(".json")
        self.sidecar: dict[str, Any] = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        except ValueError as exc:
            raise UserError(f"{self.path} is not a LiteRT model LiteRT can load: {exc}") from exc
        self.interpreter.allocate_tensors()
        if len(self.interpreter.get_input_details()) != 1:
            raise UserError(f"{self.path} has several inputs; an SR model takes one image")
        in_shape = tuple(int(d) for d in self.interpreter.get_input_details()[0]["shape"])
        out_shape = tuple(int(d) for d in self.interpreter.get_output_details()[0]["shape"])
        self.layout = self.sidecar.get("layout") or _infer_layout(in_shape, self.path)
        hw = slice(1, 3) if self.layout == "nhwc" else slice(2, 4)
        self.tile_size: tuple[int, int] = in_shape[hw]  # (h, w)
        self.scale = int(self.sidecar.get("scale") or out_shape[hw][0] // in_shape[hw][0])
        if out_shape[hw] != (self.tile_size[0] * self.scale, self.tile_size[1] * self.scale):
            raise UserError(
                f"{self.path}: output {out_shape} is not input {in_shape} scaled by "
                "an integer; not an SR model from srsearch export"
            )
        if receptive_field is None:
            receptive_field = self.sidecar.get("receptive_field")
        if receptive_field is None:
            receptive_field = self._measure_receptive_field()
        self.receptive_field = int(receptive_field)

    def config(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "tflite": str(self.path),
            "precision": self.sidecar.get("precision"),
            "layout": self.layout,
            "input_size": [self.tile_size[1], self.tile_size[0]],
            "receptive_field": self.receptive_field,
            "source_config": self.sidecar.get("model_config"),
        }

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:
        """(3, th, tw) float -> (3, th*s, tw*s) float."""
        from srsearch.deploy.tflite import invoke

        x = tile.transpose(1, 2, 0)[None] if self.layout == "nhwc" else tile[None]
        y = invoke(self.interpreter, x)[0]
        return y.transpose(2, 0, 1) if self.layout == "nhwc" else y

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, 3, h*s, w*s); h, w at least the file's input size."""
        b, c, h, w = x.shape
        th, tw = self.tile_size
        if h < th or w < tw:
            raise UserError(
                f"image {w}x{h} (LR) is smaller than {self.path.name}'s fixed input {tw}x{th}; "
                "a static-shape file cannot run it exactly. Export a file with a smaller "
                f"--input-size (at most {w}x{h}) for this data"
            )
        s, r = self.scale, self.receptive_field
        arr = x.detach().float().cpu().numpy()
        out = np.empty((b, c, h * s, w * s), dtype=np.float32)
        rows, cols = tile_starts(h, th, r), tile_starts(w, tw, r)
        for i in range(b):
            for y0, ky0, ky1 in rows:
                for x0, kx0, kx1 in cols:
                    y = self._run_tile(arr[i, :, y0 : y0 + th, x0 : x0 + tw])
                    out[i, :, ky0 * s : ky1 * s, kx0 * s : kx1 * s] = y[
                        :, (ky0 - y0) * s : (ky1 - y0) * s, (kx0 - x0) * s : (kx1 - x0) * s
                    ]
        return torch.from_numpy(out).to(x.device)

    def _measure_receptive_field(self, trials: int = 3) -> int:
        """Largest distance (LR px) from a perturbed input pixel to an output block it moves."""
        warnings.warn(
            f"{self.path.name} has no sidecar {self.path.with_suffix('.json').name}; measuring "
            "its receptive field on the file (an estimate: export with srsearch export to "
            "record the exact one)",
            stacklevel=3,
        )
        th, tw = self.tile_size
        cy, cx = th // 2, tw // 2
        rng = np.random.default_rng(0)
        reach = 0
        for _ in range(trials):
            base = rng.random((3, th, tw), dtype=np.float32)
            bumped = base.copy()
            bumped[:, cy, cx] = 1.0 - bumped[:, cy, cx]
            moved = np.abs(self._run_tile(bumped) - self._run_tile(base)).sum(axis=0) > 0
            ys, xs = np.nonzero(moved)
            if ys.size:
                reach = max(
                    reach,
                    int(np.abs(ys // self.scale - cy).max()),
                    int(np.abs(xs // self.scale - cx).max()),
                )
        return reach


def _infer_layout(shape: tuple[int, ...], path: Path) -> str:
    if len(shape) == 4 and shape[3] == 3 and shape[1] != 3:
        return "nhwc"
    if len(shape) == 4 and shape[1] == 3:
        return "nchw"
    raise UserError(f"{path}: input shape {shape} is neither (1, 3, H, W) nor (1, H, W, 3)")
