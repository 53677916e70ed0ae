"""Image decoding, resizing and the on-disk decode cache behind `srsearch.data.datasets`.

Everything here works on numpy uint8 RGB arrays (H, W, 3). Decoding normalises whatever a user's
folder holds (grayscale, palette, alpha, 16-bit) to that form, or raises `ImageReadError` with a
short reason that the loader turns into one warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Bump when decoding or LR generation changes, so old cache entries are not reused.
_CACHE_VERSION = 1

# Largest decoded image (pixels) used unless SRSEARCH_MAX_PIXELS says otherwise: 40 MP, a
# 7700x5200 photo. A flat 12000x12000 PNG is 140 KB on disk but took 20 GB to evaluate.
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "SRSEARCH_MAX_PIXELS"


class ImageReadError(Exception):
    """A file that cannot be used as an image; the message is the reason, for a warning."""


def max_pixels() -> int:
    """The decoded-size limit: ``$SRSEARCH_MAX_PIXELS`` if set, else `DEFAULT_MAX_PIXELS`."""
    from srsearch.common.errors import UserError

    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_PIXELS_ENV}={text!r}: give a positive number of pixels, e.g. "
                        f"{DEFAULT_MAX_PIXELS}")
    return value


def _too_large(w: int, h: int, limit: int) -> str:
    return (f"{w}x{h} ({w * h / 1e6:.1f} MP) is over the {limit / 1e6:g} MP limit on decoded "
            f"images; set {MAX_PIXELS_ENV}={w * h} to use it (memory grows with the pixels)")


def check_pixels(w: int, h: int, limit: int | None = None) -> None:
    """Raise `ImageReadError` when a w x h image is over the limit (default `max_pixels()`)."""
    limit = max_pixels() if limit is None else limit
    if w * h > limit:
        raise ImageReadError(_too_large(w, h, limit))


def _check_header(path: Path, limit: int) -> None:
    """Refuse an image over ``limit`` pixels from its header, before anything is decoded
    (Pillow reads the size lazily). Files Pillow cannot identify pass: the decoders below
    (tifffile) check them or report them."""
    if limit > (Image.MAX_IMAGE_PIXELS or 0):
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check must not undercut ours
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the check below is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"over Pillow's decompression-bomb limit ({exc}); set "
                             f"{MAX_PIXELS_ENV} above its pixel count to use it") from None
    except Exception:  # noqa: BLE001 - not for Pillow; reported by the decoding that follows
        return
    check_pixels(w, h, limit)


# --------------------------------------------------------------------------------------------
# Geometry and resizing


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right edge so height and width are multiples of `scale` (a view)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _check_uint8(img: np.ndarray, what: str) -> None:
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"{what} expects a uint8 (H, W[, C]) image, got {img.dtype} {img.shape}")


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """Pillow BICUBIC resize of a uint8 image by 1/scale (antialiased, like MATLAB imresize).

    The image must already be modcropped: a size that is not a multiple of `scale` would make
    the effective factor differ from `scale` and misalign LR and HR pixels.
    """
    _check_uint8(hr, "bicubic_downscale")
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image {w}x{h} is not a multiple of scale {scale}; modcrop it first")
    out = Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC)
    return np.asarray(out).copy()


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Pillow BICUBIC resize of a uint8 image by `scale` (the classic SR baseline), uint8 out."""
    _check_uint8(lr, "bicubic_upscale")
    h, w = lr.shape[:2]
    out = Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC)
    return np.asarray(out).copy()


# --------------------------------------------------------------------------------------------
# Decoding


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    """16-bit to 8-bit as round(v / 257), in exact integer arithmetic."""
    a = a.astype(np.int64)
    return ((2 * a + 257) // 514).clip(0, 255).astype(np.uint8)


def _to_rgb(a: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) uint8 -> contiguous (H, W, 3); alpha is dropped, not composited."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] in (1, 2):  # gray, gray + alpha
        a = np.repeat(a[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _read_png_16bit_rgb(path: Path) -> np.ndarray | None:
    """Full-precision read of a 16-bit RGB(A) PNG, which Pillow would cut to its high bytes.

    Pillow has no 16-bit RGB mode: its unpacker keeps the most significant byte. Decoding the same
    stream a second time with the little-endian unpacker keeps the low byte instead; the two give
    the exact 16-bit samples. Returns None when this Pillow version does not allow the trick.
    """
    planes = []
    for suffix in ("16B", "16L"):  # high byte, then low byte
        with Image.open(path) as im:
            im.tile = [(t[0], t[1], t[2], t[3].replace("16B", suffix)) for t in im.tile]
            try:
                im.load()
            except (ValueError, OSError):
                return None
            planes.append(np.asarray(im).astype(np.uint16))
    return planes[0] * 256 + planes[1]


def _read_tiff_16bit(path: Path, limit: int) -> np.ndarray | None:
    """16-bit gray/RGB TIFF through tifffile (Pillow cuts 16-bit RGB TIFF to 8 bits)."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            if page.dtype != np.uint16 or page.photometric not in (
                tifffile.PHOTOMETRIC.MINISBLACK,
                tifffile.PHOTOMETRIC.RGB,
            ):
                return None
            planar = len(page.shape) == 3 and page.shape[0] in (3, 4) and page.shape[2] > 4
            h, w = page.shape[1:3] if planar else page.shape[:2]
            check_pixels(int(w), int(h), limit)
            a = page.asarray()
    except ImageReadError:
        raise
    except Exception:  # tifffile needs imagecodecs for some compressions; Pillow may cope
        return None
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = a.transpose(1, 2, 0)  # planar (C, H, W) storage
    return a


def read_rgb8(path: Path, limit: int | None = None) -> np.ndarray:
    """Decode an image file to contiguous (H, W, 3) uint8 RGB.

    Grayscale, palette, CMYK and alpha images are converted to RGB (alpha dropped); 16-bit
    samples v become round(v / 257). EXIF orientation is not applied: pixels are used as stored,
    as MATLAB and most SR codebases do. An image over ``limit`` pixels (default `max_pixels()`)
    is refused from its header, before it is decoded. Raises ImageReadError with the reason.
    """
    limit = max_pixels() if limit is None else limit
    try:
        _check_header(path, limit)
        if path.suffix.lower() in (".tif", ".tiff"):
            a = _read_tiff_16bit(path, limit)
            if a is not None:
                return _to_rgb(_u16_to_u8(a))
        with Image.open(path) as im:
            sixteen_bit_rgb = im.format == "PNG" and any(
                str(t[3]).endswith(";16B") and im.mode in ("RGB", "RGBA") for t in im.tile
            )
            if not sixteen_bit_rgb:
                im.load()
                return _pil_to_rgb8(im)
        a = _read_png_16bit_rgb(path)
        if a is None:  # fall back to Pillow's 8-bit view (high byte; off by at most one)
            with Image.open(path) as im:
                im.load()
                return _pil_to_rgb8(im)
        return _to_rgb(_u16_to_u8(a))
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageReadError("not a readable image") from None
    except Exception as exc:  # truncated or corrupt data surfaces as many decoder error types
        raise ImageReadError(f"cannot decode ({type(exc).__name__}: {exc})") from None


def _pil_to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageReadError(f"unsupported {im.mode} pixel values outside 0..65535")
        return _to_rgb(_u16_to_u8(a))
    if im.mode == "F":
        raise ImageReadError("32-bit float pixels are not supported; save as 8- or 16-bit")
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, LA, P, PA, RGBA, CMYK, YCbCr, 1: alpha is dropped
    return np.array(im, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# On-disk cache of decoded (HR, LR) pairs


def default_cache_dir() -> Path:
    """`$SRSEARCH_CACHE`, else `$XDG_CACHE_HOME/srsearch`, else `~/.cache/srsearch`."""
    if os.environ.get("SRSEARCH_CACHE"):
        return Path(os.environ["SRSEARCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "srsearch"
    return Path.home() / ".cache" / "srsearch"


def file_identity(path: Path) -> tuple[str, int, int]:
    """(resolved path, mtime in ns, size): what invalidates a cached decode."""
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskCache:
    """Decoded HR/LR arrays as .npy files under `root/images`, one entry per (file, scale).

    Each entry is `<key>.hr.npy`, `<key>.lr.npy` and `<key>.json`; the JSON (written last) holds
    the source files' mtime and size, so an edited file misses the cache and is rewritten.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "images"
        self.writable = True  # cleared after the first failed write, which warns once

    def _paths(self, hr_path: str, scale: int) -> tuple[Path, Path, Path]:
        key = hashlib.sha1(hr_path.encode()).hexdigest()[:24] + f"_x{scale}"
        return tuple(self.root / f"{key}.{part}" for part in ("hr.npy", "lr.npy", "json"))

    def get(self, ident: dict) -> tuple[np.ndarray, np.ndarray] | None:
        hr_p, lr_p, meta_p = self._paths(ident["hr"][0], ident["scale"])
        try:
            meta = json.loads(meta_p.read_text())
            if meta.get("version") != _CACHE_VERSION or meta.get("ident") != ident:
                return None
            hr, lr = np.load(hr_p), np.load(lr_p)
        except (OSError, ValueError):
            return None
        if list(hr.shape) != meta["hr_shape"] or list(lr.shape) != meta["lr_shape"]:
            return None  # another process is rewriting this entry
        return hr, lr

    def put(self, ident: dict, hr: np.ndarray, lr: np.ndarray) -> None:
        """Store a pair; a cache that cannot be written only costs speed, so it warns once."""
        if not self.writable:
            return
        hr_p, lr_p, meta_p = self._paths(ident["hr"][0], ident["scale"])
        meta = {"version": _CACHE_VERSION, "ident": ident}
        meta |= {"hr_shape": list(hr.shape), "lr_shape": list(lr.shape)}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(hr_p, lambda f: np.save(f, hr))
            _atomic_write(lr_p, lambda f: np.save(f, lr))
            _atomic_write(meta_p, lambda f: f.write(json.dumps(meta).encode()))
        except OSError as exc:
            self.writable = False
            warnings.warn(
                f"image cache {self.root} is not writable ({exc}); images are decoded every run. "
                "Set SRSEARCH_CACHE to a writable folder",
                stacklevel=2,
            )
