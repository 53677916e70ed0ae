"""srsearch upscale: exact tiled .tflite output, video in and out with OpenCV, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from srsearch.apply.upscale import load_upscaler, upscale
from srsearch.cli import main
from srsearch.data.image_io import read_rgb8
from srsearch.evaluation.evaluate import super_resolve
from srsearch.models import build_model
from srsearch.models.modelio import save_model
from tests.conftest import smooth_image

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

CONFIG = {"family": "ecbsr", "scale": 2, "m": 2, "channels": 8}  # receptive field 4 LR px
TILE = (24, 16)  # W x H of the .tflite file's static input


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_model(build_model(CONFIG).eval(), tmp_path_factory.mktemp("run") / "model.pt")


@pytest.fixture(scope="module")
def tflite_file(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from srsearch.deploy.export import export_tflite
    from srsearch.models.modelio import load_model_file

    out = tmp_path_factory.mktemp("tfl") / "ecbsr.tflite"
    export_tflite(load_model_file(saved)[0], out, input_size=TILE, val_images=1, log=lambda m: None)
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1])
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def test_tiled_tflite_equals_pytorch_on_a_frame_not_a_multiple_of_the_tile(
    saved: Path, tflite_file: Path, tmp_path: Path
) -> None:
    lr = smooth_image(np.random.default_rng(3), 37, 61)  # 37 x 61 LR: 3 x 4 tiles of 16 x 24
    Image.fromarray(lr).save(tmp_path / "frame.png")
    assert main(["upscale", str(tflite_file), str(tmp_path / "frame.png"),
                 "--out", str(tmp_path / "sr.png"), "--threads", "1"]) == 0
    got = read_rgb8(tmp_path / "sr.png")
    want = super_resolve(load_upscaler(str(saved)).model, lr)
    assert got.shape == (74, 122, 3)
    # the file and PyTorch agree to ~1e-5 before rounding: uint8 outputs differ by at most one
    # level, only where a value sits on a rounding boundary
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_frame_that_fits_the_tile_is_the_whole_frame_result(tflite_file: Path) -> None:
    up = load_upscaler(str(tflite_file), threads=1)
    lr = smooth_image(np.random.default_rng(4), TILE[1], TILE[0])
    x = torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    from srsearch.deploy import tflite

    whole = tflite.run_tflite(tflite_file, x.permute(0, 2, 3, 1).numpy())[0]  # one NHWC run
    want = np.round(np.clip(whole, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(up(lr), want)
    assert up.frames == 1 and up.model_ms > 0 and up.notes == []
    small = up(lr[:10, :20])  # smaller than the file's input: padded, and said so
    assert small.shape == (20, 40, 3) and "smaller than" in up.notes[0]


def test_video_keeps_frame_count_size_and_fps(tflite_file: Path, tmp_path: Path, capsys) -> None:
    base = smooth_image(np.random.default_rng(5), 40, 52)
    frames = [np.ascontiguousarray(np.roll(base, 3 * i, axis=1)) for i in range(5)]
    write_video(tmp_path / "clip.mp4", frames, fps=12)
    out = tmp_path / "out" / "clip_x2.mp4"
    assert main(["upscale", str(tflite_file), str(tmp_path / "clip.mp4"), "--out", str(out),
                 "--compare"]) == 0
    got, fps = read_video(out)
    assert len(got) == 5 and got[0].shape == (80, 104, 3) and fps == pytest.approx(12)
    side, side_fps = read_video(out.with_name("clip_x2.compare.mp4"))
    assert len(side) == 5 and side[0].shape == (80, 208, 3) and side_fps == pytest.approx(12)
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip_x2.compare.mp4", "clip_x2.mp4"]
    printed = capsys.readouterr().out
    assert "5 frame(s) x2" in printed and "at 12 fps" in printed and "ms/frame" in printed


def test_folder_with_gray_alpha_and_16_bit_images(saved: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    rgb = smooth_image(rng, 20, 24)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb[:, :, 0]).save(src / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(src / "rgba.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(src / "deep.png")  # 16-bit gray
    (src / "broken.png").write_bytes(b"not a png")
    result = upscale(str(saved), src, tmp_path / "out", compare=True, progress=False,
                     log=lambda m: None)
    assert result["frames"] == 3 and result["skipped"] == [str(src / "broken.png")]
    model = load_upscaler(str(saved)).model
    for name in ("gray.png", "rgba.png", "deep.png"):
        lr = read_rgb8(src / name)  # decoded as `srsearch eval` decodes it: 8-bit RGB
        assert np.array_equal(read_rgb8(tmp_path / "out" / name), super_resolve(model, lr))
        assert read_rgb8(tmp_path / "out" / "compare" / name).shape == (40, 96, 3)


@pytest.mark.parametrize(
    "src_name, content, out, extra, message",
    [
        ("x.png", b"garbage" * 50, "o.png", [], "x.png: not a readable image"),
        ("x.txt", b"hi", "o.png", [], "unsupported extension '.txt'"),
        ("x.mp4", b"\0" * 4096, "o.mp4", [], "x.mp4: OpenCV cannot open it as a video"),
        ("x.png", None, "o.png", ["--scale", "3"], "is x2 but --scale is 3"),
        ("x.png", None, "o.mp4", [], "an image output must end in one of .png"),
        ("x.png", None, "sub", [], "sub is a folder; give a file name"),
    ],
    ids=["unreadable", "extension", "codec", "scale", "out-format", "out-is-folder"],
)
def test_bad_input_is_a_clear_error_before_any_output(
    saved: Path, tmp_path: Path, capsys, src_name, content, out, extra, message
) -> None:
    src = tmp_path / src_name
    if content is None:
        Image.fromarray(smooth_image(np.random.default_rng(0), 16, 16)).save(src)
    else:
        src.write_bytes(content)
    (tmp_path / "sub").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["upscale", str(saved), str(src), "--out", str(tmp_path / out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
