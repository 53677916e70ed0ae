"""Compiler-aware latency model: per-op latencies measured on the target after conversion.

- `build_table(device, space, path, ...)`: measure the table (probe models + whole nets) on a
  `android_bench.Device`, resumable; `lut.LatencyTable` is the JSON file.
- `LatencyModel(table)` / `LatencyModel.load(path)`: ``predict(arch) -> ms``, what the search
  receives.
- `validate(model, device, out, n=...)`: MAPE / Spearman against nets measured end to end.

See docs/latency.md.
"""

from srsearch.latency.build import (
    build_table,
    distinct_keys,
    lr_size,
    spanning_archs,
    table_keys,
)
from srsearch.latency.lut import LatencyTable, UnknownKeyError
from srsearch.latency.model import LatencyModel
from srsearch.latency.validate import summarize, validate, validation_path

__all__ = [
    "LatencyModel",
    "LatencyTable",
    "UnknownKeyError",
    "build_table",
    "distinct_keys",
    "table_keys",
    "lr_size",
    "spanning_archs",
    "summarize",
    "validate",
    "validation_path",
]
