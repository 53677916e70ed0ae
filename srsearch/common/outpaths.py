"""Output paths checked before the work starts: a folder or file that cannot be written is a
`UserError` naming it, not a traceback after minutes of training or an evaluation lost.

Writability is tested by creating (and removing) a temporary file, not only with
``os.access``: access() answers for the real uid and says yes to root on a read-only mount.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from srsearch.common.errors import UserError


def _file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def prepare_out_dir(path: Path, flag: str = "--out") -> Path:
    """Create output folder ``path`` (and its parents) and check that files can be made in it.

    Raises:
        UserError: ``path`` or one of its parents is a file, or the folder cannot be created
            or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; give a folder (new or existing)")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, so no folder can be made under it; "
                        "give another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot create the folder ({exc.strerror}); give a "
                        "path you can write") from None
    check_writable_dir(path, flag)
    return path


def check_writable_dir(path: Path, flag: str = "--out") -> None:
    """Raise a `UserError` unless a file can be created in existing folder ``path``."""
    path = Path(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder is not writable; give a path you can write "
                        "or change its permissions")
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".srsearch-write-test.")
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in this folder ({exc.strerror}); give a "
                        "path you can write") from None
    os.close(fd)
    os.unlink(tmp)


def check_out_file(path: Path, flag: str = "--out") -> Path:
    """Check that output file ``path`` can be written (its folder is created if missing); an
    existing file there is replaced later, an existing folder is an error."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, so no file can be made under it; "
                        "give another path")
    prepare_out_dir(path.parent if str(path.parent) else Path("."), f"{flag} {path}: folder")
    return path
