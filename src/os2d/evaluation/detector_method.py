"""An :class:`os2d.Detector` as a harness method: evaluation runs the same inference path as the CLI and service.

``os2d`` is the model with its TransformNet; ``sliding-square`` is the same model with the TransformNet fixed
to the identity (:func:`os2d.evaluation.baselines.sliding.sliding_square`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.model.os2d import Os2dModel
from os2d.results import Detections


class DetectorMethod:
    """Harness method (``add_class`` / ``detect`` / ``describe``) backed by a :class:`Detector`.

    Class views (rotations/flips) come from the detector's config; class kernels are computed once per class.
    """

    def __init__(self, detector: Detector, name: str = "os2d") -> None:
        self.detector = detector
        self.name = name

    @classmethod
    def from_model(cls, model: Os2dModel, config: InferenceConfig, *, name: str = "os2d") -> DetectorMethod:
        """A detector on ``model`` where it is (the model is put in eval mode, not moved)."""
        return cls(Detector(model, config, device=next(model.parameters()).device), name)

    @property
    def class_names(self) -> list[str]:
        return self.detector.classes

    def add_class(self, name: str, images: Sequence[Image.Image]) -> None:
        """Register class ``name`` from RGB class images (several = few-shot; all views merged before NMS)."""
        self.detector.add_class(name, list(images))

    def detect(self, image: Image.Image) -> Detections:
        return self.detector.detect(image)

    def describe(self) -> dict[str, Any]:
        model = self.detector.model
        return {"method": self.name, "backbone": model.config.backbone,
                "transform": type(model.transform_net).__name__}


__all__ = ["DetectorMethod"]
