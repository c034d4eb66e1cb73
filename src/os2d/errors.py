"""The base class of every error that is the user's input, not a bug in os2d.

The command line prints an :class:`Os2dError` as one line ``os2d: error: ...`` (exit code 2) and lets any other
exception through as a traceback; the service turns it into a 4xx with ``detail``.
"""

from __future__ import annotations


class Os2dError(ValueError):
    """A problem with the user's input (an image, a file, a CSV row, an option), explained in one line."""


__all__ = ["Os2dError"]
