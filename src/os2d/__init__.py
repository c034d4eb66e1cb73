"""os2d: one-shot object detection."""
