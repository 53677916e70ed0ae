"""Small shared pieces of the model files."""

from __future__ import annotations

from torch import nn

from srcore.layers import LRSkip  # noqa: F401  (re-exported for the model files)

SCALES = (2, 3, 4)


def check_scale(scale: int) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")


def get_act_layer(name: str | None, channels: int = 1) -> nn.Module:
    """Activation by name, created fresh each call."""
    if name is None or name == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; choose relu, prelu, tanh or none")
