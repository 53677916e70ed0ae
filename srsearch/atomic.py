"""Atomic file writes: a killed process leaves the old file or the new one, never half of one
(every result file that marks work as done is written through here); and the matching read of
earlier results."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any, indent: int = 2) -> Path:
    """JSON (non-JSON values through ``str``), newline-terminated, written atomically."""
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when there is no such file or it does not parse (earlier
    results to resume from: none usable means start afresh)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
