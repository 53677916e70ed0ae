"""`LatencyModel`: predicted latency of an architecture = table terms + fitted whole-net term.

``predict(arch) = sum_f coef[f] * feature_f(arch)``, where the features come from the table's
per-op latencies over `supernet.space.layers(arch, lr_hw)`:

- ``lut``: the sum of the table terms of all ops;
- ``conv3``, ``conv1``, ``add``: that sum split by op type (3x3 convs incl. head and tail, 1x1
  convs of wide cells, residual adds; the skip, the last add and the pixel shuffle are the same
  in every net and go to ``const``);
- ``n_ops``: the number of ops (a per-op overhead the single-op probes do not see);
- ``const``: 1 (one invoke, the fixed ops' share not captured by the table).

The coefficients are fitted on end-to-end measurements of random subnets (`fit`), by least
squares on the *relative* error (rows weighted by 1/measured), because the search cares about
ratios to a budget and the nets span two decades of latency. Several forms are fitted; the one
with the lowest leave-one-out MAPE is kept, a form with more terms only when it beats a simpler
one by `MIN_GAIN` (docs/latency.md shows the residuals behind that).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srsearch.common.errors import UserError
from srsearch.latency.lut import LatencyTable
from srsearch.latency.probes import key_str
from supernet.space import ArchConfig, LayerSpec, SearchSpace, distinct_keys, layers

# Candidate forms, simplest first.
FORMS: dict[str, tuple[str, ...]] = {
    "lut": ("lut", "const"),
    "lut+n_ops": ("lut", "n_ops", "const"),
    "per_op": ("conv3", "conv1", "add", "const"),
    "per_op+n_ops": ("conv3", "conv1", "add", "n_ops", "const"),
}
# A form with more terms must lower the leave-one-out MAPE by this much (percentage points).
MIN_GAIN = 0.5
IDENTITY_FIT: dict[str, Any] = {"form": "identity", "coef": {"lut": 1.0}, "n": 0}


def op_type(spec: LayerSpec) -> str:
    """The feature an op's table term goes to: conv3, conv1, add or fixed."""
    if spec.block in ("skip", "upsample"):
        return "fixed"
    if spec.op == "conv":
        return "conv3" if spec.k == 3 else "conv1"
    if spec.op == "add":
        return "add"
    return "fixed"


def features(table: LatencyTable, arch: ArchConfig) -> dict[str, float]:
    """All features of ``arch`` (see the module docstring); raises on unknown keys."""
    out = {"lut": 0.0, "conv3": 0.0, "conv1": 0.0, "add": 0.0, "fixed": 0.0}
    specs = layers(arch, table.lr_hw)
    for spec in specs:
        ms = table.ms(spec)
        out["lut"] += ms
        out[op_type(spec)] += ms
    out["n_ops"] = float(len(specs))
    out["const"] = 1.0
    return out


def fit(rows: Sequence[dict[str, float]], measured_ms: Sequence[float]) -> dict[str, Any]:
    """Fit every form of `FORMS` on (features, measured) and keep the best (see module doc).

    Returns:
        {"form", "coef": {feature: value}, "n", "loo_mape", "train_mape",
        "candidates": {form: {"coef", "loo_mape", "train_mape"}}}; `IDENTITY_FIT` (plain
        table sum) when there are too few nets to fit even the simplest form.
    """
    y = np.asarray(measured_ms, dtype=np.float64)
    candidates = {}
    for form, terms in FORMS.items():
        if len(y) < len(terms) + 2:  # leave-one-out needs at least one spare row
            continue
        x = np.array([[r[t] for t in terms] for r in rows], dtype=np.float64)
        coef = _wls(x, y)
        loo = np.array([_wls(np.delete(x, i, 0), np.delete(y, i)) @ x[i] for i in range(len(y))])
        candidates[form] = {
            "coef": dict(zip(terms, coef.tolist(), strict=True)),
            "loo_mape": _mape(loo, y),
            "train_mape": _mape(x @ coef, y),
        }
    if not candidates:
        return {**IDENTITY_FIT, "n": len(y)}
    best = None
    for form, c in candidates.items():  # simplest first
        if best is None or c["loo_mape"] < candidates[best]["loo_mape"] - MIN_GAIN:
            best = form
    return {"form": best, **candidates[best], "n": len(y), "candidates": candidates}


def _wls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error: minimise sum(((x @ b - y) / y) ** 2)."""
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    return coef


def _mape(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - y) / y) * 100)


class LatencyModel:
    """The latency predictor the search receives: ``predict(arch) -> ms`` on one target.

    Built from a `LatencyTable` (usually `LatencyModel.load("lut.json")`); it never measures
    anything itself.
    """

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self.coef: dict[str, float] = dict((table.fit or IDENTITY_FIT)["coef"])

    @classmethod
    def load(cls, path: Path) -> LatencyModel:
        return cls(LatencyTable.load(path))

    @property
    def fingerprint_id(self) -> str:
        return self.table.fingerprint_id

    @property
    def scale(self) -> int:
        return self.table.scale

    @property
    def lr_hw(self) -> tuple[int, int]:
        return self.table.lr_hw

    @property
    def target_spec(self) -> dict[str, Any]:
        """How to rebuild the table's device (`android_bench.device_from_target`)."""
        return self.table.target

    @property
    def export_spec(self) -> dict[str, Any]:
        """The export settings the table's nets were measured with (ship the same)."""
        return dict(self.table.export or {})

    def check_covers(self, space: SearchSpace) -> None:
        """Refuse a ``space`` with ops the table never measured, naming both spaces."""
        missing = [k for k in distinct_keys(space, self.table.lr_hw) if k not in self.table.entries]
        if missing:
            built = self.table.space or "unknown"
            raise UserError(
                f"the latency table for {self.fingerprint_id} (built for space {built}) does "
                f"not cover the supernet's space {space.to_dict()}: it has no entry for "
                f"{len(missing)} of its ops (e.g. {key_str(missing[0])}). Build the table with "
                "the supernet's --scale/--max-width/--max-depth (`srsearch latency build`; a "
                "rerun on the same --out measures only the missing ops)."
            )

    def covers(self, arch: ArchConfig) -> bool:
        """Whether the table has every op of ``arch`` (a table built before PReLU keys were
        measured prices no PReLU net)."""
        return arch.scale == self.table.scale and all(
            k in self.table.entries for k in layers(arch, self.table.lr_hw))

    def table_sum(self, arch: ArchConfig) -> float:
        """Sum of the table terms alone (no fitted term), ms."""
        self._check_scale(arch)
        return sum(self.table.ms(spec) for spec in layers(arch, self.table.lr_hw))

    def predict(self, arch: ArchConfig) -> float:
        """Predicted end-to-end latency of ``arch`` on the table's target, ms."""
        self._check_scale(arch)
        f = features(self.table, arch)
        return float(sum(c * f[name] for name, c in self.coef.items()))

    def breakdown(self, arch: ArchConfig) -> list[tuple[LayerSpec, float]]:
        """(op, table ms) in execution order, for reports."""
        self._check_scale(arch)
        return [(spec, self.table.ms(spec)) for spec in layers(arch, self.table.lr_hw)]

    def _check_scale(self, arch: ArchConfig) -> None:
        if arch.scale != self.table.scale:
            raise UserError(
                f"architecture is x{arch.scale} but the latency table "
                f"({self.table.fingerprint_id}) is for x{self.table.scale}; build a table for "
                f"x{arch.scale} with `srsearch latency build --scale {arch.scale}`"
            )
