"""Tensor operations used by the detector (pure PyTorch, no compiled extensions)."""

from os2d.ops.boxes import batched_nms, box_area, box_iou, clip_boxes_xyxy, nms, nonempty_mask

__all__ = ["batched_nms", "box_area", "box_iou", "clip_boxes_xyxy", "nms", "nonempty_mask"]
