"""Building one settings dataclass from another's fields, so that each value has one owner.

`RunConfig` (search) and `TrainConfig` (training) own their fields and check them in
``__post_init__``; the CLI and `PipelineConfig` do not restate them, they build those configs
from their own values with `build_config` (and the pipeline does so when it is created, so a bad
value is refused before any training starts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from srsearch.common.errors import UserError

T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any], *,
                 rename: Mapping[str, str] | None = None, context: str | None = None,
                 **overrides: Any) -> T:
    """An instance of dataclass ``cls`` whose fields come from ``values``.

    Args:
        values: Source values by name (``vars(args)``, ``asdict(config)``); a field takes
            ``values[rename.get(field, field)]`` when that key is there, else its default.
        rename: ``cls`` field -> key of ``values`` where the names differ.
        context: When given, a `UserError` from ``cls`` is re-raised prefixed with it and with
            ``cls``'s flags (``--finetune-steps``) written as the source's keys
            (``train_steps``), so the message names what the user set.
        overrides: Field values that win over ``values``.
    """
    rename = dict(rename or {})
    kw = {f.name: values[rename.get(f.name, f.name)] for f in fields(cls)
          if rename.get(f.name, f.name) in values}
    kw.update(overrides)
    try:
        return cls(**kw)
    except UserError as exc:
        if context is None:
            raise
        msg = str(exc)
        for f in fields(cls):
            msg = msg.replace(f"--{f.name.replace('_', '-')} ", f"{rename.get(f.name, f.name)} ")
        raise UserError(f"{context}: {msg}") from None
