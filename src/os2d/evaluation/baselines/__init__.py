"""Detection methods evaluated by one harness (:mod:`os2d.evaluation.harness`): OS2D itself and the baselines.

Every method has the same small API: ``add_class(name, images)`` registers a class from one or several RGB
PIL class images, ``detect(image)`` returns :class:`os2d.results.Detections` in the pixels of the given
image, so metrics, timing and output files are shared.

Methods (registry :data:`METHODS`):
    * ``os2d`` - the model with its TransformNet, through :class:`os2d.Detector`
      (:class:`os2d.evaluation.detector_method.DetectorMethod`: the inference path of the CLI and service);
    * ``sliding-square`` - paper's "sliding window, square": the same detector, the transformation fixed to
      the identity (:func:`os2d.evaluation.baselines.sliding.sliding_square`);
    * ``sliding-ar`` - paper's "sliding window, target AR": class features at their own w x h size
      (:class:`os2d.evaluation.baselines.sliding.SlidingWindowAR`);
    * ``sift`` - SIFT + ratio test + RANSAC homography (:class:`os2d.evaluation.baselines.sift.SiftMatcher`, OpenCV);
    * ``template`` - multi-scale normalised cross-correlation (:class:`os2d.evaluation.baselines.template.TemplateMatcher`,
      OpenCV);
    * ``detector-retrieval`` - paper's main baseline: class-agnostic detector on the model's trunk + GeM retrieval
      (:class:`os2d.evaluation.baselines.detector_retrieval.DetectorRetrieval`);
    * ``coae`` - CoAE (Hsieh et al. 2019): the same proposals ranked by a co-attention / co-excitation head
      (:class:`os2d.evaluation.baselines.coae.CoaeMethod`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from os2d.config import InferenceConfig
    from os2d.model.os2d import Os2dModel
    from os2d.results import Detections

METHODS = ("os2d", "sliding-square", "sliding-ar", "sift", "template", "detector-retrieval", "coae")
MODEL_METHODS = ("os2d", "sliding-square", "sliding-ar", "detector-retrieval", "coae")  # need a feature extractor (an Os2dModel)
AUTO_SCALE_METHODS = ("os2d", "sliding-square")  # run through os2d.Detector: support image_size="auto"


class DetectionMethod(Protocol):
    """What the evaluation harness needs from a method."""

    name: str

    def add_class(self, name: str, images: Sequence[Image.Image]) -> None: ...

    def detect(self, image: Image.Image) -> Detections: ...

    def describe(self) -> dict[str, Any]: ...


def require_cv2() -> Any:
    """Import OpenCV or explain how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("this baseline needs OpenCV: pip install 'os2d[train]' "
                          f"(opencv-python-headless) ({exc})") from exc
    return cv2


def build_method(method: str, config: InferenceConfig, *, model: Os2dModel | None = None,
                 **options: Any) -> DetectionMethod:
    """Build a method by registry name; ``options`` go to its constructor (e.g. ``ratio=0.7`` for sift).

    Raises:
        ValueError: unknown name, or a model-based method without ``model``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in MODEL_METHODS and model is None:
        raise ValueError(f"method {method!r} needs a model (its feature extractor)")
    if method == "os2d":
        from os2d.evaluation.detector_method import DetectorMethod

        return DetectorMethod.from_model(model, config, **options)  # type: ignore[arg-type]
    if method == "sliding-square":
        from os2d.evaluation.baselines.sliding import sliding_square

        return sliding_square(model, config, **options)  # type: ignore[arg-type]
    if method == "sliding-ar":
        from os2d.evaluation.baselines.sliding import SlidingWindowAR

        return SlidingWindowAR(model, config, **options)  # type: ignore[arg-type]
    if method == "detector-retrieval":
        from os2d.evaluation.baselines.detector_retrieval import DetectorRetrieval

        return DetectorRetrieval(model, config, **options)  # type: ignore[arg-type]
    if method == "coae":
        from os2d.evaluation.baselines.coae import CoaeMethod

        return CoaeMethod(model, config, **options)  # type: ignore[arg-type]
    if method == "sift":
        from os2d.evaluation.baselines.sift import SiftMatcher

        return SiftMatcher(config, **options)
    from os2d.evaluation.baselines.template import TemplateMatcher

    return TemplateMatcher(config, **options)


__all__ = ["AUTO_SCALE_METHODS", "METHODS", "MODEL_METHODS", "DetectionMethod", "build_method", "require_cv2"]
