"""Explicit model registry: ``family`` name -> (config dataclass, module class).

A model is data: ``{"family": "espcn", "scale": 2, ...}``. ``build_model`` rebuilds the module from
that dict, so checkpoints hold config + state dict and never pickled modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from srsearch.common.errors import UserError

_FAMILIES: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {}
_PRESETS: dict[str, dict[str, Any]] = {}
_PRESET_LR: dict[str, float] = {}
DEFAULT_LR = 1e-3


def register(family: str, config_cls: type, builder: Callable[[Any], nn.Module]) -> None:
    """Register a model family explicitly (called at the bottom of each model file)."""
    if family in _FAMILIES:
        raise ValueError(f"model family {family!r} registered twice")
    _FAMILIES[family] = (config_cls, builder)


def register_preset(name: str, config: dict[str, Any], lr: float = DEFAULT_LR) -> None:
    """A named configuration for ``--arch NAME`` (scale is filled in at build time) and the Adam
    learning rate it trains best with under our short cosine schedules."""
    _PRESETS[name] = dict(config)
    _PRESET_LR[name] = lr


def preset_lr(name: str) -> float:
    """The learning rate ``srsearch train --arch NAME`` uses when ``--lr`` is not given."""
    return _PRESET_LR.get(name, DEFAULT_LR)


def families() -> list[str]:
    return sorted(_FAMILIES)


def presets() -> list[str]:
    return sorted(_PRESETS)


def preset_config(name: str, scale: int) -> dict[str, Any]:
    """The config dict of a preset at ``scale``."""
    if name not in _PRESETS:
        raise UserError(
            f"unknown architecture {name!r}; choose one of {', '.join(presets())} "
            "or give a JSON config file"
        )
    return {**_PRESETS[name], "scale": scale}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from its JSON-serialisable config dict."""
    cfg = dict(config)
    family = cfg.pop("family", None)
    if family not in _FAMILIES:
        raise UserError(
            f"model config has family {family!r}; known families: {', '.join(families())}"
        )
    config_cls, builder = _FAMILIES[family]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise UserError(
            f"model config for {family!r} has unknown keys {unknown}; allowed: {sorted(names)}"
        )
    for key, value in cfg.items():  # JSON has lists where dataclasses hold tuples
        if isinstance(value, list):
            cfg[key] = tuple(value)
    return builder(config_cls(**cfg))


def config_of(config: Any, family: str) -> dict[str, Any]:
    """The JSON dict of a model config dataclass."""
    return {"family": family, **dataclasses.asdict(config)}
