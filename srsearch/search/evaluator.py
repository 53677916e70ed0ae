"""Accuracy of candidates: Y-PSNR (and SSIM) on validation images, cached per candidate.

`ImageScorer` scores any SR model on a fixed set of images with the conventions of
`srsearch.evaluation.metrics` (output clamped and rounded to uint8, Y channel of BT.601, border
shave = scale). `SubnetEvaluator` is what stage 2 receives: the score of a supernet subnet with its
inherited weights, cached by the architecture's JSON, so a candidate the search proposes twice
costs one forward pass.

Center crops (``crop``): each validation image is cut to its central ``crop x crop`` LR pixels
(and the matching HR pixels) before scoring. Scores on crops rank candidates like scores on
whole images (same content, fewer pixels) but are not comparable with `srsearch eval` figures;
a 2K DIV2K image costs ~100x a 96x96 crop. ``crop=None`` scores whole images. The crop is
taken on whole LR pixels, so HR = LR * scale stays aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from srsearch.common.errors import UserError
from srsearch.evaluation.metrics import score_sr
from supernet.network import SuperNet
from supernet.space import ArchConfig


@dataclass(frozen=True)
class Score:
    """Mean Y-PSNR (dB) and Y-SSIM of a model on the scorer's images."""

    psnr: float
    ssim: float


def center_crop(lr: np.ndarray, hr: np.ndarray, scale: int, crop: int | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """The central ``crop x crop`` LR pixels and the HR pixels they map to (whole images if
    ``crop`` is None or not smaller than the image)."""
    if crop is None:
        return lr, hr
    h, w = lr.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return (lr[y : y + ch, x : x + cw],
            hr[y * scale : (y + ch) * scale, x * scale : (x + cw) * scale])


class ImageScorer:
    """Scores SR models on fixed (optionally center-cropped) validation images.

    Images of one size are run as one batch (always the case with a crop smaller than every
    image), otherwise one by one.

    Args:
        images: `srsearch.data.datasets.SRImage` list (uint8 RGB HR and LR).
        scale: Upscaling factor; also the border shaved before the metrics.
        crop: LR side of the center crop, or None for whole images (see the module docstring).
        ssim: Also compute SSIM (about as dear as a forward pass of a small net on CPU).
    """

    def __init__(self, images: Sequence, scale: int, crop: int | None = 64,
                 ssim: bool = True) -> None:
        if not images:
            raise UserError("no validation images to score candidates on; give --data with a "
                            "val split")
        if crop is not None and crop <= 2:
            raise UserError(f"crop {crop} is too small: the metric shaves {scale} px a side; "
                            "give at least 16 or None for whole images")
        self.scale, self.crop, self.with_ssim = scale, crop, ssim
        pairs = [center_crop(img.lr, img.hr, scale, crop) for img in images]
        self.hr = [np.ascontiguousarray(hr) for _, hr in pairs]
        # float copies: dataset images are read-only, which torch.from_numpy warns about
        lrs = [torch.from_numpy(np.array(lr, dtype=np.float32)).permute(2, 0, 1) / 255.0
               for lr, _ in pairs]  # (3, h, w) each
        same = len({t.shape for t in lrs}) == 1
        self._batches = [torch.stack(lrs)] if same else [t[None] for t in lrs]

    @torch.no_grad()
    def score(self, model: nn.Module) -> Score:
        """Mean Y-PSNR/SSIM of ``model`` (run in eval mode) over the images."""
        was_training = model.training
        model.eval()
        try:
            outs = [sr for x in self._batches for sr in model(x)]  # (3, hs, ws) each
        finally:
            model.train(was_training)
        scores = [score_sr(sr, hr, self.scale, ssim=self.with_ssim)
                  for sr, hr in zip(outs, self.hr, strict=True)]
        psnr, ssim = (float(np.mean(v)) for v in zip(*scores, strict=True))
        return Score(psnr, ssim if self.with_ssim else float("nan"))


class SubnetEvaluator:
    """Stage 2's accuracy evaluator: score of a supernet subnet with inherited weights.

    ``psnr(arch)`` / ``score(arch)`` build the standalone subnet
    (`SuperNet.get_active_subnet`), score it with an `ImageScorer` and cache the result by
    ``arch.to_json()``. ``calls`` counts the candidates actually scored (cache misses).
    """

    def __init__(self, supernet: SuperNet, images: Sequence, scale: int,
                 crop: int | None = 64, ssim: bool = True) -> None:
        if supernet.space.scale != scale:
            raise UserError(f"the supernet is x{supernet.space.scale} but the evaluation scale "
                            f"is x{scale}; use images and a supernet of the same scale")
        self.supernet = supernet
        self.scorer = ImageScorer(images, scale, crop, ssim)
        self.cache: dict[str, Score] = {}
        self.calls = 0

    def score(self, arch: ArchConfig) -> Score:
        key = arch.to_json()
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.scorer.score(self.supernet.get_active_subnet(arch))
        return self.cache[key]

    def psnr(self, arch: ArchConfig) -> float:
        return self.score(arch).psnr
