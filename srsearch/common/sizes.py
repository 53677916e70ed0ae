"""Frame sizes: one parser for ``WIDTHxHEIGHT`` flags and one rule from output to LR size.

Sizes given by users and files are (width, height), as they are written ("1280x720"); LR sizes
inside the latency model are (height, width), as tensors are laid out. `lr_size` is the one
place that turns one into the other.
"""

from __future__ import annotations

import math
import re

from srsearch.common.errors import UserError

TARGET_OUTPUT = (1280, 720)  # (W, H) of the frame the latency budget is for by default


def parse_size(text: str, flag: str = "--out-size", example: str = "1280x720") -> tuple[int, int]:
    """'1280x720' -> (1280, 720), (width, height); a `UserError` naming ``flag`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or min(int(m[1]), int(m[2])) < 1:
        raise UserError(f"{flag} {text!r}: give WIDTHxHEIGHT with positive sides, e.g. {example}")
    return int(m[1]), int(m[2])


def lr_size(out_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """LR (height, width) for an HR output of ``out_size`` = (width, height).

    Rounded up, so the output covers the target (x3 at 1280x720: LR 240x427, output 1281x720,
    one column to crop); rounding down would time a smaller image than the one shipped.
    """
    w, h = out_size
    return math.ceil(h / scale), math.ceil(w / scale)
