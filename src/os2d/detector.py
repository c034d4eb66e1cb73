"""The user-facing detector: class images and input images in, detections in original pixels out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from os2d.config import InferenceConfig
from os2d.gallery import ClassGallery, encode_class_images
from os2d.inference.detect import detect_levels, prepare_levels
from os2d.inference.shortlist import ClassDescriptorCache
from os2d.io import ImageSource, load_image
from os2d.model.os2d import Os2dModel
from os2d.results import Detections
from os2d.weights import load_model, model_fingerprint

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA if available else CPU; anything else as given (clear error if unavailable)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return dev


class Detector:
    """One-shot detector: register classes from one (or a few) pictures, then detect them in any image.

    Example:
        >>> det = Detector.from_weights("default")
        >>> det.add_class("cereal", "cereal_box.jpg")
        >>> dets = det.detect("shelf.jpg")
        >>> dets.boxes_xyxy, dets.scores, dets.label_names
    """

    def __init__(self, model: Os2dModel, config: InferenceConfig | None = None, *,
                 device: str | torch.device | None = "cpu") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config or InferenceConfig()
        self.gallery = ClassGallery(model_id=model_fingerprint(model))
        self._shortlist_desc = ClassDescriptorCache()  # class descriptors of the gallery for shortlist_top_k

    @classmethod
    def from_weights(cls, weights: str | Path = "default", *, device: str | torch.device | None = "cpu",
                     config: InferenceConfig | None = None, **config_changes: Any) -> Detector:
        """Build from a weights name (``default`` needs no files) or a checkpoint path."""
        config = (config or InferenceConfig()).replace(**config_changes) if config_changes else config
        return cls(load_model(weights), config, device=device)

    @property
    def classes(self) -> list[str]:
        return list(self.gallery.class_names)

    def add_class(self, name: str, images: ImageSource | Sequence[ImageSource], *, rotations: bool | None = None,
                  horizontal_flip: bool | None = None) -> None:
        """Register class ``name`` from one image or several (few-shot; all merged before NMS).

        Adding to an existing name appends views. Rotated (90/180/270) and flipped views are added when
        enabled here or in the detector's config.
        """
        if not name or not isinstance(name, str):
            raise ValueError("class name must be a non-empty string")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError(f"class {name!r}: no class image given")
        rot = self.config.rotations if rotations is None else rotations
        flip = self.config.horizontal_flip if horizontal_flip is None else horizontal_flip
        self.gallery.add(name, *encode_class_images(self.model, items, rotations=rot, horizontal_flip=flip))

    def remove_class(self, name: str) -> None:
        self.gallery.remove(name)

    def save_gallery(self, path: str | Path) -> None:
        self.gallery.save(path)

    def load_gallery(self, path: str | Path) -> None:
        """Replace the gallery with a saved one (must come from the same model)."""
        gallery = ClassGallery.load(path)
        if gallery.model_id and gallery.model_id != self.gallery.model_id:
            raise ValueError(f"gallery {path} was computed by another model ({gallery.model_id}); "
                             f"this detector's model is {self.gallery.model_id}")
        self.gallery = gallery

    def detect(self, image: ImageSource, **config_changes: Any) -> Detections:
        """Detect all gallery classes in one image; keyword arguments override :class:`InferenceConfig` fields."""
        view_opts = {"rotations", "horizontal_flip"} & set(config_changes)
        if view_opts:
            raise ValueError(f"{sorted(view_opts)} take effect when classes are added: pass them to "
                             "Detector.from_weights(...) or add_class(...), not to detect()")
        config = self.config.replace(**config_changes) if config_changes else self.config
        img = load_image(image)
        return self._detect_levels(prepare_levels(img, config), img.size, config)

    def detect_pyramid(self, levels: list[torch.Tensor], original_size: tuple[int, int],
                       **config_changes: Any) -> Detections:
        """Detect in an image pyramid made by ``os2d.inference.detect.prepare_levels(image, detector.config)``
        (with the same config changes), e.g. in a background thread; equal to :meth:`detect` on that image."""
        config = self.config.replace(**config_changes) if config_changes else self.config
        return self._detect_levels(levels, original_size, config)

    def _detect_levels(self, levels: list[torch.Tensor], size: tuple[int, int], config: InferenceConfig) -> Detections:
        g = self.gallery
        if g.kernels is None or g.num_views == 0:
            return Detections.empty(g.class_names, size)
        desc = (self._shortlist_desc.get(g.kernels, self.model.config.pool_border)
                if config.shortlist_top_k is not None else None)
        return detect_levels(self.model, levels, size, g.kernels, g.view_class, g.class_names, config, class_desc=desc)

    def detect_many(self, images: Iterable[ImageSource], **config_changes: Any) -> list[Detections]:
        return [self.detect(im, **config_changes) for im in images]
