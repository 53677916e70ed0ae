"""Silence library output a user cannot act on, in this process and in worker processes.

What the README's main job printed besides its own progress (fresh clone, session 6), and
what each is:

- torch's "`isinstance(treespec, LeafSpec)` is deprecated" FutureWarning (the converter, via
  torch.export) and "<enum 'KernelPreference'> is an Enum subclass ..." (logger
  ``torch.utils._pytree``, triggered by torchao's import);
- torchao's "Failed to load .../_C_mxfp8...so" / "_C_cutlass_90a" (logger ``torchao``: CUDA
  kernels a CPU wheel does not have);
- TensorFlow/absl C++ lines written straight to file descriptor 2 when the converter's runtime
  loads ("All log messages before absl::InitializeLog() ...", "oneDNN custom operations are
  on ..."), which no Python setting reaches;
- Lightning's INFO lines ("GPU available", "TPU available", an advertisement for its cloud
  logger), logger ``lightning.pytorch.utilities.rank_zero``;
- Optuna's "The 'greenlet' package is unavailable" (logger ``optuna._gp.batched_lbfgsb``).

Python-level ones are filtered by logger level or warning filter; the C++ lines are sent to a
log file by redirecting descriptor 2 while the converter is imported (`c_stderr_to_log`) and,
in export worker processes, for the worker's life (`quiet_worker`, a pool ``initializer``).
Errors still reach the user: Python exceptions travel back from workers to the parent, and
nothing at ERROR level is filtered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Loggers whose WARNING/INFO output is noise to a user of srsearch (see the module docstring).
_QUIET_LOGGERS = {
    "torchao": logging.ERROR,
    "torch.utils._pytree": logging.ERROR,
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,
    # "The 'greenlet' package is unavailable, falling back to sequential L-BFGS-B": stage 3's
    # GP sampler works without it (and installing it would change the sampler's arithmetic)
    "optuna._gp.batched_lbfgsb": logging.ERROR,
}


def library_log_path() -> Path:
    """Where C++ library output of srsearch's processes goes (appended)."""
    return Path(tempfile.gettempdir()) / f"srsearch-library-{os.getuid()}.log"


def quiet_library_logs() -> None:
    """Hide the converter's C++ INFO lines, torch's LeafSpec FutureWarning and the loggers in
    ``_QUIET_LOGGERS``; errors show."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def c_stderr_to_log() -> Iterator[None]:
    """Send what C/C++ code writes to descriptor 2 to `library_log_path()` for the duration
    (Python's own ``sys.stderr`` is flushed first and restored after)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(library_log_path(), "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_converter() -> Any:
    """litert-torch, imported once with C++ stderr sent to the library log: loading its
    runtime prints absl/oneDNN lines and torchao's CUDA-kernel warnings."""
    if "litert_torch" not in sys.modules:
        with c_stderr_to_log():
            import litert_torch  # noqa: F401
    return sys.modules["litert_torch"]


def quiet_worker() -> None:
    """Pool ``initializer`` of export workers: `quiet_library_logs`, and the worker's
    descriptor 2 to `library_log_path()` for its life (its exceptions reach the parent through
    the pool, so nothing the user needs is lost)."""
    quiet_library_logs()
    with open(library_log_path(), "ab") as log:
        os.dup2(log.fileno(), 2)
