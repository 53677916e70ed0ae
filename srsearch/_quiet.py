"""Silence library output a user cannot act on, in this process and in worker processes.

The converter (litert-torch, through torch.export) triggers torch's
"`isinstance(treespec, LeafSpec)` is deprecated" FutureWarning and prints C++ INFO lines, once
per exported model: they drown the progress output. Warning filters are per process and a
spawned worker starts with none, so worker pools pass `quiet_library_logs` as their
``initializer``; the environment variable reaches every child by inheritance.
"""

from __future__ import annotations

import os
import warnings


def quiet_library_logs() -> None:
    """Hide the converter's C++ INFO lines and torch's LeafSpec FutureWarning; errors show."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
