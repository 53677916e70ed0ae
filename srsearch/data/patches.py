"""Torch datasets over `srsearch.data.datasets.SRImage` lists: random aligned training patches
(`PatchDataset`, drawn by the global step through `StepSampler`, so a resumed run continues the
data order) and whole validation images (`FullImageDataset`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from srsearch.common.errors import UserError
from srsearch.data.datasets import SRImage


def _to_chw(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    out = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    out /= 255
    return torch.from_numpy(out)


def dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 flips/rotations of an (H, W, ...) array: optional flip, then t % 4 turns."""
    if t >= 4:
        img = img[:, ::-1]
    return np.rot90(img, t % 4)


class PatchDataset(Dataset):
    """Random aligned training patches: LR (x, y) <-> HR (x * s, y * s).

    Sample number n (any n >= 0) depends only on (seed, n): an image drawn uniformly (so one
    huge image cannot take over the training: weighting by area let a 12000x12000 flat
    picture supply nearly every patch), a uniform crop position in it and, with `augment`, one
    of 8 flips/rotations. Flat crops (LR standard deviation below `min_std` grey levels, such
    as the black sky of hubble_deep_field or retina's background) are redrawn up to
    `max_tries` times: they carry no high frequencies to learn from. ``len()`` is one epoch's
    worth (`length`); training draws sample numbers past it through `StepSampler`, which
    makes them a function of the optimiser step, so a resumed run sees what an uninterrupted
    one would have seen.
    """

    def __init__(
        self,
        images: list[SRImage],
        scale: int,
        lr_patch: int = 48,
        length: int = 1000,
        augment: bool = True,
        seed: int = 0,
        min_std: float = 4.0,
        max_tries: int = 10,
    ) -> None:
        usable = [im for im in images if min(im.lr.shape[:2]) >= lr_patch]
        if not usable:
            smallest = min((min(im.lr.shape[:2]) for im in images), default=0)
            raise UserError(
                f"LR patch size {lr_patch} is larger than every training image (largest LR "
                f"side available: {smallest}); lower the patch size or use larger images"
            )
        if len(usable) < len(images):
            small = [im.name for im in images if im not in usable]
            warnings.warn(
                f"{len(small)} image(s) smaller than the {lr_patch}px LR patch are not used "
                f"for training: {', '.join(small)}",
                stacklevel=2,
            )
        for im in usable:
            if im.hr.shape[:2] != (im.lr.shape[0] * scale, im.lr.shape[1] * scale):
                raise ValueError(
                    f"image {im.name}: HR {im.hr.shape} is not LR {im.lr.shape} x{scale}"
                )
        self.images = usable
        self.scale, self.lr_patch, self.length = scale, lr_patch, length
        self.augment, self.seed = augment, seed
        self.min_std, self.max_tries = min_std, max(1, max_tries)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            raise IndexError(f"sample number {index} is negative")
        rng = np.random.default_rng((self.seed, index))
        p, s = self.lr_patch, self.scale
        for _ in range(self.max_tries):
            im = self.images[int(rng.integers(0, len(self.images)))]
            y = int(rng.integers(0, im.lr.shape[0] - p + 1))
            x = int(rng.integers(0, im.lr.shape[1] - p + 1))
            lr = im.lr[y : y + p, x : x + p]  # (p, p, 3)
            if self.min_std <= 0 or float(lr[::2, ::2].std()) >= self.min_std:
                break
        hr = im.hr[y * s : (y + p) * s, x * s : (x + p) * s]  # (p*s, p*s, 3)
        if self.augment:
            t = int(rng.integers(0, 8))
            lr, hr = dihedral(lr, t), dihedral(hr, t)
        return _to_chw(lr), _to_chw(hr)


class StepSampler(Sampler[int]):
    """Sample numbers of a training loader as a function of the optimiser step.

    Step s of rank r (of ``world``) takes samples ``(s * world + r) * batch_size + j``, j <
    ``batch_size``. Each pass (``iter``) starts at the current step, read from ``step()``, and
    runs to the end of its epoch of ``steps_per_epoch`` steps; so a run resumed from a
    checkpoint taken mid-epoch draws exactly the samples the uninterrupted run would have
    drawn (a plain loader would start the epoch over and replay its patches). Lightning
    restores the step before it iterates the loader. Use with ``num_workers=0`` or workers
    that are re-created each epoch, and without Lightning's distributed sampler
    (``use_distributed_sampler=False``): ranks are handled here.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, step: Callable[[], int],
                 rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.step, self.rank, self.world = step, rank, world

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        start = int(self.step())
        end = (start // self.steps_per_epoch + 1) * self.steps_per_epoch
        b = self.batch_size
        return iter([(s * self.world + self.rank) * b + j
                     for s in range(start, end) for j in range(b)])


class FullImageDataset(Dataset):
    """Whole images for validation and evaluation: (lr (3, h, w), hr (3, H, W), name)."""

    def __init__(self, images: list[SRImage]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        im = self.images[index]
        return _to_chw(im.lr), _to_chw(im.hr), im.name
