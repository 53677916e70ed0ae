"""What the search needs of a latency model, spelled out.

Stages 2 and 3 only predict (`LatencyPredictor`). `run_search` also records where the
predictions hold and ships the model the way it was timed, so it takes a `SearchPredictor`:
`srsearch.latency.LatencyModel` is one; `PredictorDefaults` fills in "unknown" for a predictor
that is only a formula (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from supernet.space import ArchConfig, SearchSpace


class LatencyPredictor(Protocol):
    """What stages 2 and 3 need: predicted ms of an architecture on the target.

    Stage 3 also predicts pruned architectures, whose widths are any multiple of 4 down to the
    pruning floors (still valid `ArchConfig`s); `srsearch.latency.LatencyModel` covers them when
    the floors are the search space's minima (its table holds every width of the grid).
    """

    def predict(self, arch: ArchConfig) -> float: ...


class SearchPredictor(LatencyPredictor, Protocol):
    """What `run_search` needs: predictions, and what they are predictions of.

    Attributes:
        fingerprint_id: The target's id (recorded in ``config.json``/``summary.json``), or None.
        lr_hw: LR (height, width) the predictions are for, or None (the export default).
        target_spec: How to rebuild the target's device (``{"target", "options"}`` for
            `android_bench.device_from_target`; `srsearch compare` measures on it), or None.
        export_spec: `srsearch.deploy.tflite.convert` settings the predictions were measured with
            (e.g. ``{"precision": "int8"}``); the shipped model is exported the same way.
    """

    @property
    def fingerprint_id(self) -> str | None: ...

    @property
    def lr_hw(self) -> tuple[int, int] | None: ...

    @property
    def target_spec(self) -> Mapping[str, Any] | None: ...

    @property
    def export_spec(self) -> Mapping[str, Any]: ...

    def check_covers(self, space: SearchSpace) -> None:
        """Raise `UserError` (naming both spaces) when some net of ``space`` has an op the
        predictor cannot predict."""
        ...


class PredictorDefaults:
    """Base for a predictor that is only a formula: no known target, LR size or export
    settings, and it predicts any net. Subclasses define ``predict``."""

    fingerprint_id: str | None = None
    lr_hw: tuple[int, int] | None = None
    target_spec: Mapping[str, Any] | None = None

    @property
    def export_spec(self) -> Mapping[str, Any]:
        return {}

    def check_covers(self, space: SearchSpace) -> None:
        return None
