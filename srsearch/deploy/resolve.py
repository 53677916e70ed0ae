"""A model from whatever a user names on the command line: a preset, a config JSON, a
``model.pt``, a run directory, or an exported ``.tflite``. It lives above both the model
registry and the `.tflite` runner, which it chooses between."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from srsearch.common.errors import UserError
from srsearch.models.modelio import load_model_file


def resolve_model(spec: str, scale: int) -> tuple[nn.Module, str]:
    """A model from a preset name (untrained unless parameter-free), a config JSON, a model.pt, a
    run directory holding ``model.pt``, or a ``.tflite`` file from ``srsearch export`` (run tile
    by tile, see :mod:`srsearch.deploy.tflite_model`). Returns (model in eval mode, a display
    name)."""
    from srsearch.models import build_model, preset_config, presets

    p = Path(spec)
    if p.suffix == ".tflite":
        from srsearch.deploy.tflite_model import TFLiteModel

        return TFLiteModel(p).eval(), p.stem
    if p.is_dir() and (p / "model.pt").is_file():
        p = p / "model.pt"
    if p.suffix == ".pt" or p.is_file() and p.suffix != ".json":
        model, _ = load_model_file(p)
        return model, p.parent.name if p.name == "model.pt" else p.stem
    if p.suffix == ".json":
        if not p.is_file():
            raise UserError(f"model config {p} does not exist")
        return build_model(json.loads(p.read_text())).eval(), p.stem
    if spec in presets():
        return build_model(preset_config(spec, scale)).eval(), spec
    raise UserError(
        f"model {spec!r} is neither a file, a run directory with model.pt, nor a preset "
        f"({', '.join(presets())})"
    )
