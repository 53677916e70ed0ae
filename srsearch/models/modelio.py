"""Saved models: ``model.pt`` holds the JSON config and the state dict, never pickled modules.

Every file written here loads with ``torch.load(path, weights_only=True)`` and is rebuilt through
the explicit registry (:func:`srsearch.models.build_model`).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srsearch.common.errors import UserError

FORMAT = "srsearch.model/1"


def save_model(model: nn.Module, path: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``{"format", "config", "state_dict", "extra"}`` atomically; ``model`` has
    ``config()``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": json.dumps(model.config()),  # a string: weights_only loading needs plain types
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_weights_only(path: Path, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with any failure as a `UserError`.

    Every file a user can hand to srsearch (model.pt, supernet.pt, Lightning checkpoints) goes
    through here: the restricted unpickler builds tensors, containers and numbers only, so a
    crafted file cannot run code. A refusal names the file and what it held, not torch's advice
    to retry with ``weights_only=False`` (that would run whatever the file holds).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = [ln.strip() for ln in str(exc).splitlines()
                 if "GLOBAL" in ln or "Unsupported" in ln]
        detail = f" ({found[0]})" if found else ""
        raise UserError(
            f"{what} {path} holds Python objects other than tensors and plain data{detail}; "
            "srsearch refuses to unpickle them because a crafted file can run code that way. "
            "Use a file written by srsearch (or its Lightning checkpoints) from a source you "
            "trust"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, unreadable, ...
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read {what} {path}: {reason}") from None


def load_model_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns (model in eval mode, extra)."""
    from srsearch.models import build_model

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; give a model.pt written by srsearch")
    payload = load_weights_only(path, "model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{path} is not an srsearch model file (format {FORMAT}); export it with "
            "`srsearch train` or `srsearch search`"
        )
    model = build_model(json.loads(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), json.loads(payload.get("extra", "{}"))
