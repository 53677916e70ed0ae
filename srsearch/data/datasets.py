"""Super-resolution image sets: (LR, HR) uint8 RGB pairs from a `--data SPEC`.

The torch datasets that training draws from them are in `srsearch.data.patches`.

Spec grammar (the `--data` flag of every command; see data/README.md):

- `builtin`: nine natural photographs shipped in scikit-image's wheel; no download.
  val = BUILTIN_VAL, train = BUILTIN_TRAIN.
- a folder of HR images (png, jpg, jpeg, bmp, tif, tiff; not recursive; sorted by file name):
  val = the last max(1, n // 8) files, train = the rest.
- `div2k:ROOT`: ROOT/DIV2K_train_HR (train) and ROOT/DIV2K_valid_HR (val); the official bicubic
  LR images in ROOT/DIV2K_{train,valid}_LR_bicubic/X{s}/ are used when present.
- `A+B+...`: several of the above joined by `+` (when the whole spec is not itself an existing
  folder): each part keeps its own split, and a split is the union of the parts' splits, in
  order. E.g. `sun80+t91` trains on sun80's first 70 and t91's first 80.

LR images are made by cropping HR to a multiple of the scale (modcrop) and resizing the uint8
image with Pillow BICUBIC. Decoded images are cached in this process and as .npy files on disk.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srsearch.common.errors import UserError
from srsearch.data.image_io import (
    IMAGE_EXTENSIONS,
    DiskCache,
    ImageReadError,
    bicubic_downscale,
    bicubic_upscale,
    check_pixels,
    default_cache_dir,
    file_identity,
    modcrop,
    read_rgb8,
)

__all__ = [
    "BUILTIN_TRAIN",
    "BUILTIN_VAL",
    "IMAGE_EXTENSIONS",
    "SRImage",
    "bicubic_downscale",
    "bicubic_upscale",
    "default_cache_dir",
    "load_images",
    "modcrop",
]

# Files in skimage/data/. The motorcycle stereo pair stays together in train, so nothing leaks.
BUILTIN_TRAIN: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "retina",
    "ihc",
    # Grayscale photographs and textures (expanded to RGB): the luminance detail that Y-PSNR
    # measures, which the seven colour images above have little of.
    "camera",
    "coins",
    "moon",
    "grass",
    "gravel",
    "brick",
)
BUILTIN_VAL: tuple[str, ...] = ("chelsea", "coffee")
_BUILTIN_EXT = {"rocket": ".jpg", "hubble_deep_field": ".jpg", "retina": ".jpg"}

SPLITS: tuple[str, ...] = ("train", "val", "all")
_SPEC_FORMS = "'builtin', a folder of HR images (png, jpg, bmp, tif), or 'div2k:ROOT'"

# In-process cache: (hr identity, lr identity, scale) -> SRImage with read-only arrays.
_MEMORY_CACHE: dict[tuple, SRImage] = {}


@dataclass(frozen=True, eq=False)
class SRImage:
    """One training/evaluation pair. Arrays are read-only: they are shared through the cache."""

    name: str  # file stem, unique within a set
    hr: np.ndarray  # (H, W, 3) uint8 RGB, H and W multiples of the scale
    lr: np.ndarray  # (H // s, W // s, 3) uint8 RGB


@dataclass(frozen=True)
class _Entry:
    name: str
    hr_path: Path
    lr_path: Path | None = None  # provided LR image (DIV2K), else generated


def _check_args(spec: str, scale: int, split: str) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise UserError(f"--scale {scale!r} for --data {spec}: give an integer >= 2 (2, 3 or 4)")
    if split not in SPLITS:
        raise UserError(f"split {split!r} for --data {spec}: choose one of {', '.join(SPLITS)}")


def _builtin_entries(split: str) -> list[_Entry]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    names = {"train": BUILTIN_TRAIN, "val": BUILTIN_VAL, "all": BUILTIN_TRAIN + BUILTIN_VAL}[split]
    entries = [_Entry(n, root / f"{n}{_BUILTIN_EXT.get(n, '.png')}") for n in names]
    missing = [str(e.hr_path) for e in entries if not e.hr_path.is_file()]
    if missing:
        raise UserError(
            f"--data builtin: scikit-image is missing {', '.join(missing)}; reinstall "
            "scikit-image (>=0.22) or give a folder of HR images"
        )
    return entries


def _folder_entries(spec: str, folder: Path, split: str) -> list[_Entry]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    n = len(files)
    if n == 1 and split != "all":
        warnings.warn(
            f"--data {spec}: only one image, so train and val are the same image",
            stacklevel=4,  # the caller of load_images
        )
    elif split != "all":
        n_val = max(1, n // 8)
        files = files[n - n_val :] if split == "val" else files[: n - n_val]
    return [_Entry(p.stem, p) for p in files]


def _div2k_entries(spec: str, root: Path, split: str, scale: int) -> list[_Entry]:
    parts = {"train": ("train",), "val": ("valid",), "all": ("train", "valid")}[split]
    entries = []
    for part in parts:
        hr_dir = root / f"DIV2K_{part}_HR"
        if not hr_dir.is_dir():
            raise UserError(
                f"--data {spec}: {hr_dir} does not exist; download DIV2K with "
                f"`srsearch data fetch div2k --root {root}`"
            )
        lr_dir = root / f"DIV2K_{part}_LR_bicubic" / f"X{scale}"
        for e in _folder_entries(spec, hr_dir, "all"):
            lr = lr_dir / f"{e.name}x{scale}.png"
            entries.append(_Entry(e.name, e.hr_path, lr if lr.is_file() else None))
    return entries


def _entries(spec: str, scale: int, split: str) -> tuple[list[_Entry], bool]:
    """The files a spec names for a split, and whether they are worth caching on disk."""
    if "+" in spec and not Path(spec).expanduser().exists():
        parts = spec.split("+")
        if any(not p for p in parts):
            raise UserError(f"--data {spec}: an empty part between '+'; give SPEC+SPEC, each "
                            f"one of {_SPEC_FORMS}")
        entries, disk = [], False
        for part in parts:
            more, part_disk = _entries(part, scale, split)
            entries += more
            disk = disk or part_disk
        return entries, disk
    if spec == "builtin":
        return _builtin_entries(split), False
    if spec.startswith("div2k:"):
        root = Path(spec[len("div2k:") :]).expanduser()
        if not root.is_dir():
            raise UserError(
                f"--data {spec}: {root} is not a folder; give the folder that holds "
                f"DIV2K_train_HR (`srsearch data fetch div2k --root DIR` makes one)"
            )
        return _div2k_entries(spec, root, split, scale), True
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder_entries(spec, path, split), True
    what = "is a file, not a folder" if path.exists() else "is neither a known set nor a folder"
    raise UserError(f"--data {spec}: {what}; accepted forms are {_SPEC_FORMS}")


def _load_one(entry: _Entry, scale: int, disk: DiskCache | None) -> SRImage | tuple[Path, str]:
    """The pair for one file, or (file, reason) when the file has to be skipped."""
    try:
        hr_id = file_identity(entry.hr_path)
        lr_id = file_identity(entry.lr_path) if entry.lr_path else None
    except OSError as exc:
        return entry.hr_path, f"cannot stat ({exc.strerror})"
    key = (hr_id, lr_id, scale)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    ident = {"hr": list(hr_id), "lr": list(lr_id) if lr_id else None, "scale": scale}
    cached = disk.get(ident) if disk else None
    try:
        if cached is not None:
            hr, lr = cached
            check_pixels(hr.shape[1], hr.shape[0])  # the limit may have been lowered since
        else:
            hr = read_rgb8(entry.hr_path)
    except ImageReadError as exc:
        return entry.hr_path, str(exc)
    if cached is None:
        h, w = hr.shape[:2]
        if min(h, w) < 4 * scale:
            return entry.hr_path, f"too small ({w}x{h}; needs >= {4 * scale} px a side at x{scale})"
        hr = np.ascontiguousarray(modcrop(hr, scale))
        lr = _provided_lr(entry, hr, scale) if entry.lr_path else bicubic_downscale(hr, scale)
        if disk:
            disk.put(ident, hr, lr)
    hr.flags.writeable = False
    lr.flags.writeable = False
    image = SRImage(entry.name, hr, lr)
    _MEMORY_CACHE[key] = image
    return image


def _provided_lr(entry: _Entry, hr: np.ndarray, scale: int) -> np.ndarray:
    try:
        lr = read_rgb8(entry.lr_path)
    except ImageReadError as exc:
        raise UserError(f"LR image {entry.lr_path}: {exc}; delete or re-extract it") from None
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != want:
        raise UserError(
            f"LR image {entry.lr_path} is {lr.shape[1]}x{lr.shape[0]} but its HR image "
            f"{entry.hr_path} needs {want[1]}x{want[0]} at x{scale}; delete the LR folder to "
            "generate LR images instead"
        )
    return lr


def check_spec(spec: str, scale: int, split: str = "all", flag: str = "--data") -> int:
    """The number of files ``spec`` names for ``split``, listed without decoding any: a
    setting that is read late (the search's or the evaluation's images) is checked before
    hours of training. Errors name ``flag``.

    Raises:
        UserError: unknown spec, bad scale or split, or no image file in the split.
    """
    try:
        _check_args(spec, scale, split)
        entries, _ = _entries(spec, scale, split)
    except UserError as exc:
        raise UserError(str(exc).replace("--data ", f"{flag} ", 1)) from None
    if not entries:
        raise UserError(f"{flag} {spec}: no image files in split {split!r}; give a folder of "
                        "HR images, 'builtin' or 'div2k:ROOT'")
    return len(entries)


def load_images(
    spec: str, scale: int, split: str = "all", *, cache_dir: Path | None = None
) -> list[SRImage]:
    """Load the (HR, LR) pairs of one split of a data spec (see the module docstring).

    Unreadable, truncated and too small files (a side under 4 * scale px) are skipped with one
    warning that names each. `cache_dir` holds decoded .npy copies (default:
    `default_cache_dir()`); builtin images are only cached in memory.

    Raises:
        UserError: unknown spec, bad scale or split, or no usable image in the split.
    """
    _check_args(spec, scale, split)
    entries, use_disk = _entries(spec, scale, split)
    seen: dict[str, Path] = {}
    for e in entries:
        if e.name in seen:
            raise UserError(
                f"--data {spec}: {seen[e.name].name} and {e.hr_path.name} share the name "
                f"{e.name!r}; rename one (image names are file stems)"
            )
        seen[e.name] = e.hr_path
    disk = DiskCache(cache_dir or default_cache_dir()) if use_disk else None
    images, skipped = [], []
    for entry in _progress(entries, f"loading {spec} ({split})"):
        result = _load_one(entry, scale, disk)
        (images if isinstance(result, SRImage) else skipped).append(result)
    if skipped:
        lines = "".join(f"\n  {path}: {reason}" for path, reason in skipped)
        warnings.warn(f"--data {spec}: skipped {len(skipped)} file(s):{lines}", stacklevel=2)
    if not images:
        raise UserError(
            f"--data {spec}: no usable images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) "
            f"in split {split!r}; give a folder of HR images, 'builtin' or 'div2k:ROOT'"
        )
    return images


def _progress(items: list, description: str):
    """Iterate with a transient progress bar when loading many files on a terminal."""
    if len(items) < 50 or not sys.stderr.isatty():
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, console=Console(stderr=True), transient=True)
