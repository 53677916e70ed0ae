"""Resumable, verified downloads (http(s) and file:// URLs).

A download goes to `DEST.part`; an interrupted one resumes from the bytes already there (HTTP
Range request, or a seek for file:// URLs). The finished file is checked against its SHA-256
(and size) and only then renamed to DEST, so DEST existing means it is complete.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from srsearch.common.errors import UserError

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    progress: bool = True,
    size: int | None = None,
) -> Path:
    """Download `url` to `dest` unless `dest` is already there and verified; return `dest`.

    Args:
        url: http(s):// or file:// URL.
        dest: final path; the download goes to `dest.part` first and is resumed from there.
        sha256: expected hex digest, or None to skip the check (then `size`, if given, is checked).
        progress: show a progress bar on stderr.
        size: expected size in bytes, if known.

    Raises:
        UserError: the download failed, or the file does not match the expected digest or size
            (the partial file is deleted so that a rerun starts clean).
    """
    dest = Path(dest)
    if dest.exists():
        if size is not None and (got := dest.stat().st_size) != size:
            raise UserError(f"{dest} exists but has {got} bytes, expected {size}; delete it, rerun")
        if sha256 and (actual := sha256_file(dest)) != sha256.lower():
            raise UserError(
                f"{dest} exists but its sha256 is {actual}, expected {sha256}; delete it and rerun"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hasher = hashlib.sha256()
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        with open(part, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
    with _open_source(url, offset) as (src, start, total):
        if start == 0 and offset:
            hasher = hashlib.sha256()  # the server ignored the Range request: start again
        with open(part, "r+b" if start else "wb") as out, _bar(dest.name, total, progress) as bar:
            out.seek(start)
            out.truncate()
            bar(start)
            try:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    bar(len(chunk))
            except OSError as exc:
                raise UserError(
                    f"download of {url} failed ({exc}); rerun to resume from {part}"
                ) from None
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise UserError(f"{dest.name}: downloaded {got} bytes, expected {size}; rerun to retry")
    actual = hasher.hexdigest()
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise UserError(
            f"{dest.name}: sha256 mismatch, expected {sha256.lower()}, got {actual} (from {url}); "
            "the partial file was deleted, rerun to download again or check --base-url"
        )
    part.replace(dest)
    return dest


@contextmanager
def _open_source(url: str, offset: int):
    """Yield (stream, start, total): the stream begins at byte `start` (offset or 0)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        try:
            src = open(path, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {url}: {exc.strerror}") from None
        with src:
            total = path.stat().st_size
            start = offset if offset <= total else 0
            src.seek(start)
            yield src, start, total
        return
    if parsed.scheme not in ("http", "https"):
        raise UserError(f"cannot download {url!r}: only http(s):// and file:// URLs are supported")
    request = urllib.request.Request(url, headers={"User-Agent": "srsearch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file already holds every byte
            yield _Empty(), offset, offset
            return
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot download {url}: {reason}; check the network or URL") from None
    with resp:
        length = resp.headers.get("Content-Length")
        start = offset if resp.status == 206 else 0
        total = start + int(length) if length is not None else None
        yield resp, start, total


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""


@contextmanager
def _bar(name: str, total: int | None, enabled: bool):
    """Yield advance(n_bytes); a rich download bar on stderr when enabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    columns += (TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(name, total=total)
        yield lambda n: prog.advance(task, n)
