"""srsearch.data.fetch and `srsearch data`: resumable verified downloads, DIV2K extraction layout.

Everything is served from tmp_path (file:// URLs, or an HTTP server on 127.0.0.1 for the Range
path); no test touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srsearch.commands import data as data_cmd
from srsearch.common.errors import UserError
from srsearch.data import datasets, fetch


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def blob(tmp_path) -> tuple[Path, bytes]:
    payload = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(payload)
    return src, payload


def _spy_offsets(monkeypatch) -> list[int]:
    offsets: list[int] = []
    real = fetch._open_source

    def spy(url, offset):
        offsets.append(offset)
        return real(url, offset)

    monkeypatch.setattr(fetch, "_open_source", spy)
    return offsets


def test_fetch_file_url(tmp_path, blob):
    src, payload = blob
    dest = tmp_path / "out" / "blob.bin"
    assert fetch.fetch(src.as_uri(), dest, _sha(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert not dest.with_name("blob.bin.part").exists()


def test_fetch_resumes_partial(tmp_path, blob, monkeypatch):
    src, payload = blob
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(payload[: len(payload) // 2])
    offsets = _spy_offsets(monkeypatch)
    fetch.fetch(src.as_uri(), dest, _sha(payload), progress=True, size=len(payload))
    assert offsets == [len(payload) // 2]
    assert dest.read_bytes() == payload


def test_fetch_checksum_mismatch(tmp_path, blob):
    src, payload = blob
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        fetch.fetch(src.as_uri(), dest, wrong, progress=False)
    msg = str(err.value)
    assert "blob.bin" in msg and wrong in msg and _sha(payload) in msg
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_fetch_corrupt_partial_is_caught(tmp_path, blob):
    src, payload = blob
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 1000)
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch.fetch(src.as_uri(), dest, _sha(payload), progress=False)
    fetch.fetch(src.as_uri(), dest, _sha(payload), progress=False)  # the rerun starts clean
    assert dest.read_bytes() == payload


def test_fetch_skips_verified_and_rejects_bad_existing(tmp_path, blob):
    src, payload = blob
    dest = tmp_path / "blob.bin"
    dest.write_bytes(payload)
    assert fetch.fetch((tmp_path / "missing").as_uri(), dest, _sha(payload), progress=False)
    dest.write_bytes(b"other")
    with pytest.raises(UserError, match="exists but its sha256"):
        fetch.fetch(src.as_uri(), dest, _sha(payload), progress=False)


def test_fetch_size_and_source_errors(tmp_path, blob):
    src, payload = blob
    with pytest.raises(UserError, match="expected 5"):
        fetch.fetch(src.as_uri(), tmp_path / "a.bin", None, progress=False, size=5)
    with pytest.raises(UserError, match="cannot read"):
        fetch.fetch((tmp_path / "nope").as_uri(), tmp_path / "b.bin", None, progress=False)
    with pytest.raises(UserError, match="only http"):
        fetch.fetch("ftp://example.invalid/x", tmp_path / "c.bin", None, progress=False)


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    honour_range = True

    def do_GET(self):  # noqa: N802 - http.server naming
        start = 0
        rng = self.headers.get("Range")
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(self.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("honour_range", [True, False])
def test_fetch_http_range_resume(tmp_path, blob, honour_range):
    _, payload = blob
    handler = type("H", (_Handler,), {"payload": payload, "honour_range": honour_range})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/blob.bin"
        dest = tmp_path / "blob.bin"
        dest.with_name("blob.bin.part").write_bytes(payload[:1234])
        fetch.fetch(url, dest, _sha(payload), progress=False)
        assert dest.read_bytes() == payload
        dest.unlink()
        dest.with_name("blob.bin.part").write_bytes(payload)  # complete part: 416 when ranged
        fetch.fetch(url, dest, _sha(payload), progress=False)
        assert dest.read_bytes() == payload
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- data command


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _mirror(tmp_path: Path) -> tuple[Path, Path]:
    """Tiny DIV2K-shaped zips in a mirror folder and a manifest with their real digests."""
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    members = {
        "DIV2K_train_HR.zip": {f"DIV2K_train_HR/000{i}.png": (16, 20) for i in (1, 2)},
        "DIV2K_valid_HR.zip": {"DIV2K_valid_HR/0801.png": (12, 16)},
        "DIV2K_train_LR_bicubic_X2.zip": {
            f"DIV2K_train_LR_bicubic/X2/000{i}x2.png": (8, 10) for i in (1, 2)
        },
        "DIV2K_valid_LR_bicubic_X2.zip": {"DIV2K_valid_LR_bicubic/X2/0801x2.png": (6, 8)},
        "DIV2K_train_LR_bicubic_X4.zip": {
            f"DIV2K_train_LR_bicubic/X4/000{i}x4.png": (4, 5) for i in (1, 2)
        },
    }
    archives = []
    for name, files in members.items():
        with zipfile.ZipFile(mirror / name, "w") as zf:
            top = next(iter(files)).rsplit("/", 1)[0]
            if "LR" in name:
                zf.writestr(top.split("/")[0] + "/", b"")  # parent directory entry, as in DIV2K
            for member, (h, w) in files.items():
                fill = 9 if "LR" in name else None  # provided LR: constant, unlike generated
                arr = (
                    np.full((h, w, 3), fill, np.uint8)
                    if fill
                    else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                )
                zf.writestr(member, _png_bytes(arr))
        scale = int(name[-5]) if "LR" in name else None
        data = (mirror / name).read_bytes()
        archives.append(
            {
                "file": name,
                "extracts_to": top,
                "scale": scale,
                "size": len(data),
                "sha256": _sha(data),
            }
        )
    manifest = tmp_path / "div2k.json"
    manifest.write_text(json.dumps({"base_url": "https://invalid.example/", "archives": archives}))
    return mirror, manifest


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    data_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _fetch_argv(root: Path, mirror: Path, manifest: Path, *extra: str) -> list[str]:
    base = ["data", "fetch", "div2k", "--root", str(root), "--base-url", mirror.as_uri()]
    return base + ["--manifest", str(manifest), "--no-progress", *extra]


def test_data_fetch_div2k_layout_and_rerun(tmp_path, monkeypatch):
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "cache"))
    mirror, manifest = _mirror(tmp_path)
    root = tmp_path / "div2k"
    # An interrupted earlier run left half of the train HR archive.
    whole = (mirror / "DIV2K_train_HR.zip").read_bytes()
    root.mkdir()
    (root / "DIV2K_train_HR.zip.part").write_bytes(whole[: len(whole) // 2])
    assert _run(_fetch_argv(root, mirror, manifest, "--scales", "2")) == 0

    assert sorted(p.name for p in (root / "DIV2K_train_HR").iterdir()) == ["0001.png", "0002.png"]
    assert (root / "DIV2K_valid_HR" / "0801.png").is_file()
    assert (root / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png").is_file()
    assert (root / "DIV2K_valid_LR_bicubic" / "X2" / "0801x2.png").is_file()
    assert not (root / "DIV2K_train_LR_bicubic" / "X4").exists()  # not asked for
    assert not list(root.glob("*.zip*"))  # archives removed after extraction

    datasets._MEMORY_CACHE.clear()
    train = datasets.load_images(f"div2k:{root}", 2, "train")
    assert [im.name for im in train] == ["0001", "0002"] and all((im.lr == 9).all() for im in train)
    val = datasets.load_images(f"div2k:{root}", 2, "val")
    assert val[0].hr.shape == (12, 16, 3) and (val[0].lr == 9).all()
    x4 = datasets.load_images(f"div2k:{root}", 4, "train")  # no X4 folder: generated LR
    assert x4[0].lr.shape == (4, 5, 3) and not (x4[0].lr == 9).all()

    for zip_path in mirror.iterdir():  # a rerun needs no source: everything is done
        zip_path.unlink()
    assert _run(_fetch_argv(root, mirror, manifest, "--scales", "2")) == 0


def test_data_fetch_no_lr_keep_zips(tmp_path):
    mirror, manifest = _mirror(tmp_path)
    root = tmp_path / "div2k"
    assert _run(_fetch_argv(root, mirror, manifest, "--no-lr", "--keep-zips")) == 0
    assert sorted(p.name for p in root.glob("*.zip")) == [
        "DIV2K_train_HR.zip",
        "DIV2K_valid_HR.zip",
    ]
    assert not (root / "DIV2K_train_LR_bicubic").exists()


def test_data_fetch_errors(tmp_path):
    mirror, manifest = _mirror(tmp_path)
    root = tmp_path / "div2k"
    with pytest.raises(UserError, match=r"--scales 3: no LR archives for x\[3\]"):
        _run(_fetch_argv(root, mirror, manifest, "--scales", "3"))
    m = json.loads(manifest.read_text())
    m["archives"][0]["sha256"] = "f" * 64
    manifest.write_text(json.dumps(m))
    with pytest.raises(UserError, match="DIV2K_train_HR.zip: sha256 mismatch, expected f{64}"):
        _run(_fetch_argv(root, mirror, manifest, "--no-lr"))
    # An archive that does not hold the folder the manifest promises is refused.
    m["archives"][0] |= {"sha256": None, "size": None, "extracts_to": "Elsewhere"}
    manifest.write_text(json.dumps(m))
    with pytest.raises(UserError, match="not the expected archive"):
        _run(_fetch_argv(root, mirror, manifest, "--no-lr"))


def test_shipped_manifest_is_complete():
    m = json.loads(data_cmd.DEFAULT_MANIFEST.read_text())
    assert m["base_url"] == "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
    names = {a["file"] for a in m["archives"]}
    assert {"DIV2K_train_HR.zip", "DIV2K_valid_HR.zip"} <= names
    for s in (2, 3, 4):
        assert {f"DIV2K_train_LR_bicubic_X{s}.zip", f"DIV2K_valid_LR_bicubic_X{s}.zip"} <= names
    for a in m["archives"]:
        assert a["sha256"] is None or len(a["sha256"]) == 64


def test_data_info(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "cache"))
    for i in range(9):
        Image.fromarray(np.full((12, 16, 3), i, np.uint8)).save(tmp_path / f"im{i}.png")
    assert _run(["data", "info", "--data", str(tmp_path), "--scale", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train: 8 images") and "val: 1 images" in out
    assert "im8  HR 16x12  LR 8x6" in out


def test_data_info_scale_defaults_to_2_and_is_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "cache"))
    Image.fromarray(np.full((24, 32, 3), 9, np.uint8)).save(tmp_path / "im.png")
    assert _run(["data", "info", "--data", str(tmp_path), "--split", "all"]) == 0
    assert "x2" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 5 (choose from 2, 3, 4)"
        _run(["data", "info", "--data", str(tmp_path), "--scale", "5"])
    assert "invalid choice: 5" in capsys.readouterr().err
