"""Tensor-level OS2D: backbones, correlation, TransformNet, resampling, head, box coding."""

from os2d.model.head import HeadOutput, os2d_head
from os2d.model.os2d import Os2dModel, build_os2d

__all__ = ["Os2dModel", "build_os2d", "HeadOutput", "os2d_head"]
