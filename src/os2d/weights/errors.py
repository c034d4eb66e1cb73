"""The one error of the weights package (every module of it raises this, so it lives below all of them)."""

from __future__ import annotations

from os2d.errors import Os2dError


class WeightsError(Os2dError):
    """A weights file is missing, unreadable, of an unknown format, or does not fit the model."""


__all__ = ["WeightsError"]
