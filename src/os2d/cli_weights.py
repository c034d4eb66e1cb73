"""``os2d weights ...`` and ``os2d export`` subcommands (weights registry, import, ONNX export)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the weights/export subcommands to the ``os2d`` parser."""
