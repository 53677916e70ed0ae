"""Errors a user can cause and fix (`UserError` lives in `srcore.errors`, shared by every
package; it is re-exported here)."""

from srcore.errors import UserError


class ConversionError(UserError):
    """The model could not be converted, or the converted file disagrees with PyTorch."""


__all__ = ["ConversionError", "UserError"]
