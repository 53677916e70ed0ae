"""Hand-designed SR baselines, one file per family, registered explicitly."""

from srsearch.models import bicubic, ecbsr, espcn, fsrcnn, halfres, subnet  # noqa: F401  (explicit registration)
from srsearch.models._registry import build_model, families, preset_config, preset_lr, presets

__all__ = ["build_model", "families", "inference_form", "preset_config", "preset_lr", "presets"]


def inference_form(model):
    """The module to run or export: re-parameterised models collapse, others are returned as is."""
    collapse = getattr(model, "collapse", None)
    return collapse() if callable(collapse) else model
