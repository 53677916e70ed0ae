"""Atomic file writes: a killed process leaves the old file or the new one, never half of one
(every result file that marks work as done is written through here); and the matching read of
earlier results.

Files get the permissions any new file would (0666 less the umask), not the 0600 of the
temporary file they are written through. JSON is standard JSON: a non-finite float (NaN, inf,
which `json` would write as the non-standard ``NaN``/``Infinity``) is written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any, indent: int = 2) -> Path:
    """JSON (non-JSON values through ``str``, NaN and inf as ``null``), newline-terminated,
    written atomically."""
    text = json.dumps(finite(obj), indent=indent, default=str, allow_nan=False)
    return write_text(path, text + "\n")


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


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
