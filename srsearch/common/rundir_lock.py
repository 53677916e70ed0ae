"""One writer per run directory: ``RUN_DIR/.lock``, held with ``fcntl.flock`` while a command
writes there.

Two processes resuming one run directory corrupt it (each marks the other's running trial as
stale, and both add trials). Every command that writes a run directory takes this lock first;
a second one is refused with the holder's PID. The kernel releases a flock when its holder
dies, however it dies, so a lock left by a killed run never blocks: the ``.lock`` file stays
behind (deleting it would race with a new holder) and only its PID line is stale.

A process holds each directory's lock once: nested calls for the same directory (the pipeline
running a stage into a directory it already holds) share it. Ranks other than 0 of a
multi-process run (Lightning's DDP launcher starts them as copies of the command) do not lock:
their rank-0 process holds the directory for them.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srsearch.common.errors import UserError
from srsearch.common.outpaths import check_out_file, prepare_out_dir

LOCK_NAME = ".lock"


class Busy(UserError):
    """Another live process holds the lock."""

_RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")

_held: dict[Path, int] = {}  # resolved run dir -> nesting depth in this process


def _secondary_rank() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0") for v in _RANK_VARS)


def holder_pid(run_dir: Path) -> int | None:
    """The PID written in ``run_dir/.lock`` (the last holder; it may have exited), or None."""
    return _read_pid(Path(run_dir) / LOCK_NAME)


def _read_pid(lock_file: Path) -> int | None:
    try:
        return int(lock_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def run_dir_lock(run_dir: Path, flag: str = "--out") -> Iterator[Path]:
    """Create ``run_dir`` (checked as an output folder, `prepare_out_dir`) and hold its lock.

    Raises:
        UserError: another process holds the lock (the message names its PID), or the folder
            cannot be written.
    """
    run_dir = prepare_out_dir(Path(run_dir), flag)
    with _hold(run_dir / LOCK_NAME, f"{flag} {run_dir}"):
        yield run_dir


@contextmanager
def file_lock(path: Path, flag: str = "--out") -> Iterator[Path]:
    """Check output file ``path`` (`check_out_file`) and hold ``.NAME.lock`` next to it, for
    commands whose output is one file that is rewritten as they go (a latency table)."""
    path = check_out_file(Path(path), flag)
    with _hold(path.with_name(f".{path.name}.lock"), f"{flag} {path}"):
        yield path


@contextmanager
def _hold(lock_file: Path, what: str) -> Iterator[None]:
    key = lock_file.resolve()
    if key in _held or _secondary_rank():
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = _read_pid(lock_file)
        who = f"PID {pid}" if pid is not None else "another process"
        raise Busy(
            f"{what} is in use by another srsearch process ({who}); wait for it to finish or "
            f"stop it (kill {pid if pid is not None else 'PID'}), or choose another path"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
