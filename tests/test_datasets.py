"""srsearch.data.datasets and srsearch.data.image_io: spec grammar, decoding, LR, caches,
patches."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srsearch.common.errors import UserError
from srsearch.data import datasets
from srsearch.data import image_io as _imageio
from srsearch.data.datasets import (
    BUILTIN_TRAIN,
    BUILTIN_VAL,
    SRImage,
    bicubic_downscale,
    bicubic_upscale,
    load_images,
    modcrop,
)
from srsearch.data.patches import FullImageDataset, PatchDataset, dihedral


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "default-cache"))
    datasets._MEMORY_CACHE.clear()
    yield
    datasets._MEMORY_CACHE.clear()


def _rand(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w, c) if c else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(path)
    return path


def _png16(path: Path, a: np.ndarray) -> Path:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


# ---------------------------------------------------------------------------- geometry, LR


def test_modcrop_shapes():
    img = _rand(13, 10)
    assert modcrop(img, 4).shape == (12, 8, 3)
    assert modcrop(img, 3).shape == (12, 9, 3)
    assert modcrop(img[..., 0], 2).shape == (12, 10)
    assert np.array_equal(modcrop(img, 4), img[:12, :8])


def test_bicubic_matches_pillow_and_rejects_unaligned():
    hr = _rand(24, 36)
    expected = np.asarray(Image.fromarray(hr).resize((12, 8), Image.BICUBIC))
    assert np.array_equal(bicubic_downscale(hr, 3), expected)
    up = bicubic_upscale(expected, 3)
    assert up.shape == (24, 36, 3) and up.dtype == np.uint8
    assert np.array_equal(up, np.asarray(Image.fromarray(expected).resize((36, 24), Image.BICUBIC)))
    with pytest.raises(ValueError, match="modcrop"):
        bicubic_downscale(_rand(25, 36), 3)


def test_folder_lr_is_pillow_bicubic_of_modcropped_hr(tmp_path):
    hr = _rand(23, 30)
    _save(tmp_path / "imgs" / "a.png", hr)
    (im,) = load_images(str(tmp_path / "imgs"), 4, cache_dir=tmp_path / "c")
    assert im.name == "a"
    assert np.array_equal(im.hr, hr[:20, :28])
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(hr[:20, :28])).resize((7, 5), 3))
    assert im.lr.shape == (5, 7, 3)
    assert np.array_equal(im.lr, expected)
    assert not im.hr.flags.writeable  # shared through the cache


# ---------------------------------------------------------------------------- folder splits


def test_folder_split_80_is_70_10(tmp_path):
    folder = tmp_path / "sun80"
    for i in range(80):
        _save(folder / f"img_{i:03d}.png", _rand(8, 8, seed=i))
    (folder / "notes.txt").write_text("not an image")
    kw = {"cache_dir": tmp_path / "c"}
    train = load_images(str(folder), 2, "train", **kw)
    val = load_images(str(folder), 2, "val", **kw)
    assert (len(train), len(val)) == (70, 10)
    assert [im.name for im in val] == [f"img_{i:03d}" for i in range(70, 80)]
    assert len(load_images(str(folder), 2, "all", **kw)) == 80


def test_extensions_case_insensitive_and_sorted(tmp_path):
    _save(tmp_path / "b.JPG", _rand(16, 16))
    _save(tmp_path / "a.Png", _rand(16, 16))
    _save(tmp_path / "c.bmp", _rand(16, 16))
    _save(tmp_path / "d.tiff", _rand(16, 16))
    names = [im.name for im in load_images(str(tmp_path), 2, cache_dir=tmp_path / "c")]
    assert names == ["a", "b", "c", "d"]


def test_single_image_is_both_splits_with_warning(tmp_path):
    _save(tmp_path / "only.png", _rand(16, 16))
    with pytest.warns(UserWarning, match="only one image"):
        train = load_images(str(tmp_path), 2, "train", cache_dir=tmp_path / "c")
    with pytest.warns(UserWarning, match="only one image"):
        val = load_images(str(tmp_path), 2, "val", cache_dir=tmp_path / "c")
    assert [im.name for im in train] == [im.name for im in val] == ["only"]


# ---------------------------------------------------------------------------- decoding


def test_grayscale_palette_alpha_become_rgb(tmp_path):
    rgb = _rand(8, 8)
    gray = _rand(8, 8, c=0)
    a = _imageio.read_rgb8(_save(tmp_path / "g.png", gray))
    assert a.shape == (8, 8, 3) and all(np.array_equal(a[..., c], gray) for c in range(3))
    rgba = np.dstack([rgb, np.full((8, 8), 7, np.uint8)])
    assert np.array_equal(_imageio.read_rgb8(_save(tmp_path / "rgba.png", rgba)), rgb)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(_imageio.read_rgb8(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    la = np.dstack([gray, gray])
    assert np.array_equal(_imageio.read_rgb8(_save(tmp_path / "la.png", la))[..., 1], gray)


V16 = np.array([0, 128, 129, 255, 385, 386, 32896, 65535], dtype=np.uint16)
V8 = np.array([0, 0, 1, 1, 1, 2, 128, 255], dtype=np.uint8)  # round(v / 257)


def test_16bit_gray_png_is_rounded(tmp_path):
    Image.fromarray(V16.reshape(1, 8)).save(tmp_path / "g16.png")
    out = _imageio.read_rgb8(tmp_path / "g16.png")
    assert np.array_equal(out[0, :, 0], V8) and np.array_equal(out[0, :, 2], V8)


def test_16bit_rgb_png_keeps_low_byte(tmp_path):
    rgb16 = np.stack([V16, V16[::-1], V16], axis=-1)[None]  # (1, 8, 3)
    out = _imageio.read_rgb8(_png16(tmp_path / "rgb16.png", rgb16))
    assert np.array_equal(out[0], np.stack([V8, V8[::-1], V8], axis=-1))


def test_16bit_rgb_tiff_is_rounded(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rgb16 = np.stack([V16, V16[::-1], V16], axis=-1)[None]
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    out = _imageio.read_rgb8(tmp_path / "rgb16.tif")
    assert np.array_equal(out[0], np.stack([V8, V8[::-1], V8], axis=-1))


def test_bad_files_skipped_with_one_warning(tmp_path):
    folder = tmp_path / "mixed"
    _save(folder / "good.png", _rand(16, 16))
    data = _save(folder / "full.png", _rand(32, 32, seed=1)).read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("hello")
    _save(folder / "tiny.png", _rand(7, 20))  # needs >= 8 px a side at x2
    (folder / "full.png").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_images(str(folder), 2, cache_dir=tmp_path / "c")
    assert [im.name for im in images] == ["good"]
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "skipped 3 file(s)" in msg
    for name, reason in [("text.png", "not a readable"), ("tiny.png", "too small")]:
        line = next(line for line in msg.splitlines() if name in line)
        assert reason in line
    assert "truncated.png: cannot decode" in msg


def test_spec_errors_name_the_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"--data {empty}: no usable images .*'builtin'"):
        load_images(str(empty), 2)
    with pytest.raises(UserError, match="nope: is neither.*'builtin'.*div2k:ROOT"):
        load_images(str(tmp_path / "nope"), 2)
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(UserError, match="is a file, not a folder"):
        load_images(str(tmp_path / "f.png"), 2)
    for bad in (0, 1, 2.0, True):
        with pytest.raises(UserError, match="--scale"):
            load_images("builtin", bad)
    with pytest.raises(UserError, match="split 'test'"):
        load_images("builtin", 2, "test")
    with pytest.raises(UserError, match="data fetch div2k"):
        load_images(f"div2k:{empty}", 2)


def test_duplicate_stems_are_an_error(tmp_path):
    _save(tmp_path / "a.png", _rand(16, 16))
    _save(tmp_path / "a.bmp", _rand(16, 16))
    with pytest.raises(UserError, match="share the name 'a'"):
        load_images(str(tmp_path), 2, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------------------- builtin, div2k


def test_builtin_split_and_sizes():
    assert BUILTIN_VAL == ("chelsea", "coffee")
    assert set(BUILTIN_TRAIN) == {
        "astronaut",
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "hubble_deep_field",
        "retina",
        "ihc",
        "camera",
        "coins",
        "moon",
        "grass",
        "gravel",
        "brick",
    }
    val = load_images("builtin", 4, "val")
    assert [(im.name, im.hr.shape, im.lr.shape) for im in val] == [
        ("chelsea", (300, 448, 3), (75, 112, 3)),
        ("coffee", (400, 600, 3), (100, 150, 3)),
    ]
    train = load_images("builtin", 3, "train")
    assert [im.name for im in train] == list(BUILTIN_TRAIN)
    sizes = {im.name: im.hr.shape for im in train}
    assert sizes["astronaut"] == (510, 510, 3) and sizes["retina"] == (1410, 1410, 3)
    # grayscale photos are expanded to three equal channels
    cam = next(im for im in train if im.name == "camera")
    assert (cam.hr[..., 0] == cam.hr[..., 1]).all() and (cam.hr[..., 1] == cam.hr[..., 2]).all()
    assert all(im.lr.shape[0] * 3 == im.hr.shape[0] for im in train)
    assert not list((Path(os.environ["SRSEARCH_CACHE"])).glob("**/*.npy"))  # memory only


def _div2k(root: Path) -> None:
    _save(root / "DIV2K_train_HR" / "0001.png", _rand(16, 20, seed=1))
    _save(root / "DIV2K_train_HR" / "0002.png", _rand(17, 21, seed=2))
    _save(root / "DIV2K_valid_HR" / "0801.png", _rand(12, 12, seed=3))
    # Provided LR for 0001 only: all 9s, so it cannot be mistaken for a generated one.
    _save(root / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", np.full((8, 10, 3), 9, np.uint8))


def test_div2k_layout_provided_and_generated_lr(tmp_path):
    _div2k(tmp_path)
    spec = f"div2k:{tmp_path}"
    train = load_images(spec, 2, "train", cache_dir=tmp_path / "c")
    assert [im.name for im in train] == ["0001", "0002"]
    assert (train[0].lr == 9).all() and train[0].hr.shape == (16, 20, 3)
    assert train[1].hr.shape == (16, 20, 3)
    assert np.array_equal(train[1].lr, bicubic_downscale(np.ascontiguousarray(train[1].hr), 2))
    assert [im.name for im in load_images(spec, 2, "val", cache_dir=tmp_path / "c")] == ["0801"]
    assert len(load_images(spec, 2, "all", cache_dir=tmp_path / "c")) == 3
    assert load_images(spec, 3, "train", cache_dir=tmp_path / "c")[0].lr.shape == (5, 6, 3)


def test_div2k_wrong_lr_size_names_the_file(tmp_path):
    _div2k(tmp_path)
    _save(tmp_path / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png", _rand(8, 8))
    with pytest.raises(UserError, match=r"0002x2\.png is 8x8 .* needs 10x8 at x2"):
        load_images(f"div2k:{tmp_path}", 2, "train", cache_dir=tmp_path / "c")


# ---------------------------------------------------------------------------- caches


def test_disk_cache_round_trip_and_invalidation(tmp_path, monkeypatch):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    path = _save(folder / "a.png", _rand(16, 16, seed=1))
    first = load_images(str(folder), 2, cache_dir=cache)
    assert load_images(str(folder), 2, cache_dir=cache)[0] is first[0]  # in-process hit
    assert len(list((cache / "images").glob("*.npy"))) == 2

    datasets._MEMORY_CACHE.clear()

    def no_decode(path):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(datasets, "read_rgb8", no_decode)
    again = load_images(str(folder), 2, cache_dir=cache)[0]
    assert np.array_equal(again.hr, first[0].hr) and np.array_equal(again.lr, first[0].lr)
    monkeypatch.undo()

    new = _rand(16, 16, seed=2)
    _save(path, new)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    datasets._MEMORY_CACHE.clear()
    changed = load_images(str(folder), 2, cache_dir=cache)[0]
    assert np.array_equal(changed.hr, new)
    assert len(list((cache / "images").glob("*.npy"))) == 2  # rewritten, not added


def test_unwritable_cache_warns_once(tmp_path):
    for i in range(3):
        _save(tmp_path / "imgs" / f"{i}.png", _rand(16, 16, seed=i))
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_images(str(tmp_path / "imgs"), 2, cache_dir=not_a_dir)
    assert len(images) == 3
    assert [str(w.message).split(" (")[0] for w in caught] == [
        f"image cache {not_a_dir / 'images'} is not writable"
    ]


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "a"))
    assert datasets.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SRSEARCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert datasets.default_cache_dir() == tmp_path / "x" / "srsearch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets.default_cache_dir() == Path.home() / ".cache" / "srsearch"


def test_default_cache_used_when_not_given(tmp_path):
    _save(tmp_path / "imgs" / "a.png", _rand(16, 16))
    load_images(str(tmp_path / "imgs"), 2)
    assert len(list(Path(os.environ["SRSEARCH_CACHE"]).glob("images/*.npy"))) == 2


# ---------------------------------------------------------------------------- torch datasets


def _blocky(h: int, w: int, s: int, seed: int = 0) -> SRImage:
    """HR = nearest-neighbour upscale of random LR, so every HR block maps to one LR pixel."""
    lr = _rand(h, w, seed=seed)
    return SRImage(f"img{seed}", np.repeat(np.repeat(lr, s, 0), s, 1), lr)


def _u8(t) -> np.ndarray:
    return np.rint(t.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def test_patches_are_aligned_under_every_augmentation():
    s, p = 3, 5
    im = _blocky(20, 24, s)
    ds = PatchDataset([im], s, lr_patch=p, length=64, augment=True, seed=1)
    windows = {
        dihedral(im.lr[y : y + p, x : x + p], t).tobytes()
        for y in range(20 - p + 1)
        for x in range(24 - p + 1)
        for t in range(8)
    }
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert lr.dtype == hr.dtype == torch.float32
        assert tuple(lr.shape) == (3, p, p) and tuple(hr.shape) == (3, p * s, p * s)
        assert 0 <= float(lr.min()) and float(hr.max()) <= 1
        lr8, hr8 = _u8(lr), _u8(hr)
        assert lr8.tobytes() in windows  # a real window of the LR image, possibly transformed
        assert np.array_equal(hr8, np.repeat(np.repeat(lr8, s, 0), s, 1))


def test_eight_distinct_augmentations_consistent_lr_hr():
    s, p = 2, 6
    im = _blocky(p, p, s, seed=3)  # patch = whole image: only the augmentation varies
    ds = PatchDataset([im], s, lr_patch=p, length=200, augment=True)
    seen = {}
    for i in range(len(ds)):
        lr, hr = ds[i]
        seen[_u8(lr).tobytes()] = _u8(hr).tobytes()
    assert len(seen) == 8
    assert len(set(seen.values())) == 8
    expected = {dihedral(im.lr, t).tobytes() for t in range(8)}
    assert set(seen) == expected
    plain = PatchDataset([im], s, lr_patch=p, length=20, augment=False)
    assert {_u8(plain[i][0]).tobytes() for i in range(20)} == {im.lr.tobytes()}


def test_patches_deterministic_per_seed_and_sample_number():
    ims = [_blocky(30, 30, 2, seed=k) for k in range(3)]
    a = PatchDataset(ims, 2, lr_patch=8, length=10, seed=5)
    b = PatchDataset(ims, 2, lr_patch=8, length=10, seed=5)
    assert all(np.array_equal(a[i][0], b[i][0]) for i in range(10))
    first = [a[i][0].clone() for i in range(10)]
    later = [a[10 + i][0] for i in range(10)]  # past one epoch: new samples, no replay
    assert sum(np.array_equal(first[i], later[i]) for i in range(10)) < 3
    with pytest.raises(IndexError):
        a[-1]


def test_images_drawn_uniformly_whatever_their_size():
    """The probe: one huge image took over the patch sampling (val PSNR 13.7 where 26.1 was
    normal); each image now supplies the same share of patches."""
    small, big = _blocky(10, 10, 2, seed=1), _blocky(10, 90, 2, seed=2)  # areas 1 : 9
    ds = PatchDataset([small, big], 2, lr_patch=10, length=1000, augment=False)
    from_big = sum(not np.array_equal(_u8(ds[i][0]), small.lr) for i in range(len(ds)))
    assert abs(from_big / len(ds) - 0.5) < 0.05


def _flat_png(path: Path, w: int, h: int) -> Path:
    """A w x h grey PNG written row by row: tiny on disk, w * h * 3 bytes once decoded."""
    row, z = b"\x00" + b"\x80" * w, zlib.compressobj(9)  # grey, streamed: 144 MB raw
    raw = b"".join(z.compress(row) for _ in range(h)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw)
                     + chunk(b"IEND", b""))
    return path


def test_oversized_image_skipped_before_decoding(tmp_path, monkeypatch):
    """The probe: a 140 KB 12000x12000 PNG took 20 GB to evaluate. It is skipped from its
    header, with the file, the limit and how to raise it; the limit is configurable."""
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(d / "ok.png")
    bomb = _flat_png(d / "bomb.png", 12000, 12000)
    assert bomb.stat().st_size < 300_000  # 140 KB in the probe
    decoded = []
    real = _imageio._pil_to_rgb8
    monkeypatch.setattr(_imageio, "_pil_to_rgb8", lambda im: decoded.append(im.size) or real(im))
    with pytest.warns(UserWarning) as rec:
        images = load_images(str(d), 2, "all", cache_dir=tmp_path / "cache")
    assert [im.name for im in images] == ["ok"] and decoded == [(32, 32)]
    msg = str(rec[0].message)
    assert str(bomb) in msg and "12000x12000 (144.0 MP)" in msg and "40 MP limit" in msg
    assert "SRSEARCH_MAX_PIXELS=144000000" in msg
    monkeypatch.setenv("SRSEARCH_MAX_PIXELS", "500")
    with pytest.raises(_imageio.ImageReadError, match="32x32 .* over the 0.0005 MP limit"):
        _imageio.read_rgb8(d / "ok.png")
    monkeypatch.setenv("SRSEARCH_MAX_PIXELS", "lots")
    with pytest.raises(UserError, match="SRSEARCH_MAX_PIXELS='lots'"):
        _imageio.read_rgb8(d / "ok.png")


def test_patch_larger_than_images():
    ims = [_blocky(10, 10, 2, seed=1), _blocky(20, 20, 2, seed=2)]
    with pytest.warns(UserWarning, match="img1"):
        ds = PatchDataset(ims, 2, lr_patch=12)
    assert ds.images == [ims[1]]
    with pytest.raises(UserError, match="patch size 24"):
        PatchDataset(ims, 2, lr_patch=24)


def test_full_image_dataset():
    im = _blocky(7, 9, 2)
    lr, hr, name = FullImageDataset([im])[0]
    assert name == "img0" and tuple(lr.shape) == (3, 7, 9) and tuple(hr.shape) == (3, 14, 18)
    assert np.array_equal(_u8(hr), im.hr) and np.array_equal(_u8(lr), im.lr)


def test_flat_patches_are_redrawn():
    from srsearch.data.datasets import SRImage, bicubic_downscale
    from srsearch.data.patches import PatchDataset

    rng = np.random.default_rng(0)
    hr = np.full((128, 128, 3), 90, np.uint8)
    hr[:, 64:] = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)  # right half textured
    img = SRImage("half", hr, bicubic_downscale(hr, 2))

    def flat_share(min_std):
        ds = PatchDataset([img], 2, lr_patch=8, length=300, augment=False, min_std=min_std)
        return np.mean([float(lr.std()) * 255 < 1 for lr, _ in (ds[i] for i in range(300))])

    assert flat_share(0.0) > 0.3  # about half the crops fall in the flat half
    assert flat_share(4.0) < 0.02  # redrawn up to 10 times


def test_joined_specs_keep_each_parts_split(tmp_path):
    for name, n in (("a", 16), ("b", 9)):
        for i in range(n):
            _save(tmp_path / name / f"{name}{i:02d}.png", _rand(8, 8, seed=i))
    spec = f"{tmp_path / 'a'}+{tmp_path / 'b'}"
    names = {s: [im.name for im in load_images(spec, 2, s)] for s in ("train", "val", "all")}
    # a: 16 files -> last 2 val; b: 9 files -> last 1 val; union in order
    assert names["val"] == ["a14", "a15", "b08"]
    assert names["train"] == [f"a{i:02d}" for i in range(14)] + [f"b{i:02d}" for i in range(8)]
    assert len(names["all"]) == 25
    with pytest.raises(UserError, match=r"empty part between '\+'"):
        load_images(f"{tmp_path / 'a'}+", 2, "train")
    with pytest.raises(UserError, match="nope"):
        load_images(f"{tmp_path / 'a'}+nope", 2, "train")
