"""Re-export of `srcore.layers` (the layers shared by the models and the supernet)."""

from srcore.layers import LRSkip

__all__ = ["LRSkip"]
