"""The user-facing detector: class images and input images in, detections in original pixels out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from os2d.calibration import Calibration, config_score_kind, score_kind_name
from os2d.config import InferenceConfig
from os2d.exemplar import ExemplarWarning, duplicate_warnings, image_warnings
from os2d.gallery import ClassGallery, EncodedViews, encode_class_images
from os2d.inference.colour import apply_score_factors, rescore_detections
from os2d.inference.detect import Counts, Finish, Rescue, detect_levels
from os2d.inference.negatives import suppress_by_negatives, with_negatives
from os2d.inference.pyramid import prepare_levels
from os2d.inference.refine import refine_detections
from os2d.inference.shortlist import ClassDescriptorCache
from os2d.inference.verify import verify_detections
from os2d.io import ImageSource, load_image
from os2d.model.os2d import Os2dModel
from os2d.results import Detections
from os2d.runtime import tune_allocator
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

    The one inference entry of the package: the CLI, the service and the folder runner detect through it.
    Its gallery is never changed in place: :meth:`add_class`, :meth:`remove_class`, :meth:`set_gallery` and
    :meth:`load_gallery` swap in a new one, so a detection running in another thread keeps the gallery it
    started with.

    Example:
        >>> det = Detector.from_weights("default")
        >>> det.add_class("cereal", "cereal_box.jpg")
        >>> dets = det.detect("shelf.jpg")
        >>> dets.boxes_xyxy, dets.scores, dets.label_names
    """

    def __init__(self, model: Os2dModel, config: InferenceConfig | None = None, *,
                 device: str | torch.device | None = "cpu") -> None:
        tune_allocator()  # process-wide, once: large tensors reuse heap memory (os2d.runtime; same results)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config or InferenceConfig()
        self._gallery = ClassGallery(model_id=model_fingerprint(model))
        self._shortlist_desc = ClassDescriptorCache()  # class descriptors of the gallery for shortlist_top_k
        self._warned_calibration = False  # the calibration's score kind differs from the config's (logged once)

    @classmethod
    def from_weights(cls, weights: str | Path = "default", *, device: str | torch.device | None = "cpu",
                     config: InferenceConfig | None = None, **config_changes: Any) -> Detector:
        """Build from a weights name (``default`` needs no files) or a checkpoint path."""
        config = (config or InferenceConfig()).replace(**config_changes) if config_changes else config
        return cls(load_model(weights), config, device=device)

    # ------------------------------------------------------------------------------------------------ gallery

    @property
    def gallery(self) -> ClassGallery:
        """The registered classes (read-only: change it with the methods below)."""
        return self._gallery

    @property
    def classes(self) -> list[str]:
        return list(self._gallery.class_names)

    def encode_class_images(self, images: ImageSource | Sequence[ImageSource], *, rotations: bool | None = None,
                            horizontal_flip: bool | None = None) -> tuple[torch.Tensor, list[str]]:
        """Kernels (V, S*S, C) and view names of class images, with the views of :meth:`add_class`
        (:func:`os2d.gallery.encode_class_images`); for galleries built by hand (:meth:`ClassGallery.add`)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        rot = self.config.rotations if rotations is None else rotations
        flip = self.config.horizontal_flip if horizontal_flip is None else horizontal_flip
        return encode_class_images(self.model, items, rotations=rot, horizontal_flip=flip)

    def add_class(self, name: str, images: ImageSource | Sequence[ImageSource], *, rotations: bool | None = None,
                  horizontal_flip: bool | None = None,
                  negatives: Sequence[ImageSource] = ()) -> list[ExemplarWarning]:
        """Register class ``name`` from one image or several (few-shot; all merged before NMS).

        Adding to an existing name appends views. Rotated (90/180/270) and flipped views are added when
        enabled here or in the detector's config. ``negatives``: pictures of what the class must not be
        (:meth:`add_negative`).

        Returns:
            Warnings about the pictures (:mod:`os2d.exemplar`: small, blurred, mostly background, nearly
            identical to another class); the class is added either way.
        """
        if not name or not isinstance(name, str):
            raise ValueError("class name must be a non-empty string")
        if isinstance(images, (list, tuple)) and not images:
            raise ValueError(f"class {name!r}: no class image given")
        pictures = [load_image(im) for im in (images if isinstance(images, (list, tuple)) else [images])]
        kernels, view_names, aspect, colour = self.encode_class_images(pictures, rotations=rotations,
                                                                       horizontal_flip=horizontal_flip)
        warnings = [w for pic in pictures for w in image_warnings(pic, self.model.config.class_image_size)]
        old = self._gallery
        if old.kernels is not None and old.num_views:
            originals = [v for v, kind in enumerate(view_names) if kind == "original"]
            warnings += duplicate_warnings(name, kernels[originals], old.kernels,
                                           [old.class_names[int(c)] for c in old.view_class])
        gallery = old.copy()
        gallery.add(name, kernels, view_names, aspect, colour)
        if negatives:
            neg = self._encode_negatives(name, negatives, rotations, horizontal_flip)
            gallery.add_negative(name, neg.kernels, neg.view_names, neg.aspect)
        self._gallery = gallery
        return warnings

    def add_negative(self, name: str, images: ImageSource | Sequence[ImageSource], *, rotations: bool | None = None,
                     horizontal_flip: bool | None = None) -> None:
        """Add negative exemplars to class ``name`` (``KeyError`` if absent): pictures of what it must not be,
        e.g. the neighbouring flavour of a product. A detection of the class is dropped when one of its negatives
        matches the same place (IoU >= ``config.negative_iou``) at least as well (:mod:`os2d.inference.negatives`);
        each class with negatives costs the heads of one more class."""
        if name not in self._gallery.class_names:
            raise KeyError(f"no class named {name!r}: add the class before its negatives")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        gallery = self._gallery.copy()
        neg = self._encode_negatives(name, items, rotations, horizontal_flip)
        gallery.add_negative(name, neg.kernels, neg.view_names, neg.aspect)  # negatives are not re-scored by colour
        self._gallery = gallery

    def _encode_negatives(self, name: str, images: Sequence[ImageSource], rotations: bool | None,
                          horizontal_flip: bool | None) -> EncodedViews:
        if not images:
            raise ValueError(f"class {name!r}: no negative image given")
        return self.encode_class_images([load_image(im) for im in images], rotations=rotations,
                                        horizontal_flip=horizontal_flip)

    def remove_class(self, name: str) -> None:
        """Delete class ``name`` (``KeyError`` if absent); later labels shift down by one."""
        gallery = self._gallery.copy()
        gallery.remove(name)
        self._gallery = gallery

    def set_gallery(self, gallery: ClassGallery) -> None:
        """Replace the gallery; it must come from this detector's model (same ``model_id``, kernel shape)."""
        self._check_gallery(gallery)
        self._gallery = gallery

    def _check_gallery(self, gallery: ClassGallery) -> None:
        own = self._gallery.model_id
        if gallery.model_id and gallery.model_id != own:
            raise ValueError(f"gallery computed by another model ({gallery.model_id}); this detector's model is {own}")
        cells, channels = self.model.config.class_grid_size ** 2, self.model.feature_channels
        if gallery.kernels is not None and tuple(gallery.kernels.shape[1:]) != (cells, channels):
            raise ValueError(f"gallery kernels {tuple(gallery.kernels.shape)} do not fit this model: (V, {cells}, "
                             f"{channels}) expected")

    @property
    def calibration(self) -> Calibration | None:
        """The weights' calibration (:mod:`os2d.calibration`): ``Detections.confidence`` and the default
        ``confidence_threshold``. None for weights without one, and when it was fitted on scores of another
        ``colour_rescore`` than this detector's (with a warning, once)."""
        return self._calibration_for(self.config)

    @property
    def confidence_threshold(self) -> float | None:
        """The default confidence to show and count (precision >= 0.9 on the calibration data), or None."""
        cal = self.calibration
        return None if cal is None else cal.threshold

    @property
    def known_score(self) -> float | None:
        """The raw score of :attr:`confidence_threshold` (a detection counts from it), or None."""
        cal = self.calibration
        return None if cal is None else cal.threshold_score

    def _calibration_for(self, config: InferenceConfig) -> Calibration | None:
        cal = self.model.calibration
        kind = config_score_kind(config)
        if cal is None or cal.applies_to(*kind):
            return cal
        if not self._warned_calibration:
            self._warned_calibration = True
            logger.warning("the weights' calibration was fitted on %s scores, not %s: no confidence (fit one with "
                           "os2d eval --colour-rescore/--verify-rescore ... and os2d weights calibrate)",
                           cal.score_kind, score_kind_name(*kind))
        return None

    def save_gallery(self, path: str | Path) -> None:
        self._gallery.save(path)

    def load_gallery(self, path: str | Path) -> None:
        """Replace the gallery with a saved one (must come from the same model)."""
        gallery = ClassGallery.load(path)
        try:
            self.set_gallery(gallery)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    # ---------------------------------------------------------------------------------------------- detection

    def detect(self, image: ImageSource, *, gallery: ClassGallery | None = None,
               **config_changes: Any) -> Detections:
        """Detect all gallery classes in one image; keyword arguments override :class:`InferenceConfig` fields.

        Args:
            image: any :data:`os2d.io.ImageSource`.
            gallery: classes to detect instead of the detector's own (e.g. a :meth:`ClassGallery.subset` of
                it, or classes encoded for one request with :meth:`encode_class_images`).
        """
        config = self._config(config_changes)
        img = load_image(image)
        return self._detect_levels(prepare_levels(img, config), img.size, config, gallery)

    def detect_pyramid(self, levels: list[torch.Tensor], original_size: tuple[int, int], *,
                       gallery: ClassGallery | None = None, **config_changes: Any) -> Detections:
        """Detect in an image pyramid made by ``os2d.inference.pyramid.prepare_levels(image, detector.config)``
        (with the same config changes), e.g. in a background thread; equal to :meth:`detect` on that image."""
        return self._detect_levels(levels, original_size, self._config(config_changes), gallery)

    def detect_many(self, images: Iterable[ImageSource], **config_changes: Any) -> list[Detections]:
        return [self.detect(im, **config_changes) for im in images]

    def _config(self, changes: dict[str, Any]) -> InferenceConfig:
        view_opts = {"rotations", "horizontal_flip"} & set(changes)
        if view_opts:
            raise ValueError(f"{sorted(view_opts)} take effect when classes are added: pass them to "
                             "Detector.from_weights(...) or add_class(...), not to detect()")
        return self.config.replace(**changes) if changes else self.config

    def _detect_levels(self, levels: list[torch.Tensor], size: tuple[int, int], config: InferenceConfig,
                       gallery: ClassGallery | None) -> Detections:
        if gallery is not None:
            self._check_gallery(gallery)
        g = self._gallery if gallery is None else gallery  # one snapshot for the whole image
        if g.kernels is None or g.num_views == 0:
            empty = Detections.empty(g.class_names, size)
            if self._calibration_for(config) is not None:
                empty.confidence = torch.zeros(0)
            return empty
        colour, verify, refine = config.colour_rescore > 0, config.verify_rescore > 0, config.refine_top > 0
        # re-scoring reorders and re-localising merges boxes: threshold and cap apply to the final detections
        if colour:
            run = config.replace(score_threshold=None, max_detections=None)
        elif verify or refine:  # the second look keeps the verify_top best
            run = config.replace(score_threshold=None,
                                 max_detections=config.verify_top if verify else config.max_detections)
        else:
            run = config
        image = max(levels, key=lambda t: t.shape[-1] * t.shape[-2])  # (3, h, w) in [0, 1]: the largest level
        cal = self._calibration_for(config)

        def finish(dets: Detections) -> Detections:
            """Re-scoring, re-localising and the second look of the merged detections, then their confidence."""
            if colour:
                dets = rescore_detections(dets, image, g.view_colour, g.view_class, config.colour_rescore,
                                          score_threshold=None if verify else config.score_threshold,
                                          max_detections=config.verify_top if verify else config.max_detections)
            if refine:
                dets = refine_detections(self.model, dets, image, g.kernels, g.view_class, g.view_aspect,
                                         top=config.refine_top, nms_iou=config.nms_iou_threshold,
                                         crop=config.refine_crop, check=config.refine_check)
                if not verify:
                    dets = apply_score_factors(dets, torch.ones(len(dets)), score_threshold=config.score_threshold,
                                               max_detections=config.max_detections)
            if verify:
                dets = verify_detections(self.model, dets, image, g.kernels, g.view_class, g.view_aspect,
                                         config.verify_rescore, crop=config.verify_crop, top=config.verify_top,
                                         score_threshold=config.score_threshold,
                                         max_detections=config.max_detections,
                                         precision=config.verify_precision, reshape_top=config.reshape_top,
                                         size=config.verify_size, reshape_scope=config.reshape_scope,
                                         rival_power=config.verify_rivals,
                                         rival_colour=(config.verify_colour, g.view_colour,
                                                       config.verify_colour_margin),
                                         chroma=(config.verify_chroma, g.view_colour))
            if cal is not None:
                dets.confidence = cal(dets.scores)
            return dets

        rescue = None
        least = config.auto_scale.rescue_confidence
        if least is not None and cal is not None:  # the rescue needs a confidence to judge the planned levels by
            def rescue(dets: Detections) -> bool:
                """No finished detection (``finish`` set their confidence) reaches ``least``: run the rescue levels."""
                return not bool((dets.confidence >= least).any())

        counts = None
        if config.auto_scale.up_confident and cal is not None:  # the levels above the plan, for the classes found
            def counts(dets: Detections) -> torch.Tensor:
                """(N,) bool: the finished detection counts (calibrated confidence >= the weights' threshold)."""
                return dets.confidence >= cal.threshold

        if g.negative_kernels is not None and g.negative_class.numel():
            return self._detect_with_negatives(levels, size, run, g, finish, rescue, counts)
        desc = (self._shortlist_desc.get(g.kernels, self.model.config.pool_border)
                if config.shortlist_top_k is not None else None)
        return detect_levels(self.model, levels, size, g.kernels, g.view_class, g.class_names, run,
                             class_desc=desc, view_aspect=g.view_aspect, finish=finish, rescue=rescue, counts=counts)

    def _detect_with_negatives(self, levels: list[torch.Tensor], size: tuple[int, int], config: InferenceConfig,
                               g: ClassGallery, finish: Finish, rescue: Rescue, counts: Counts = None) -> Detections:
        """Classes and their negatives (shadow classes) in one pass, then :func:`suppress_by_negatives`, then
        ``finish``."""
        assert g.kernels is not None and g.negative_kernels is not None
        views = with_negatives(g.kernels, g.view_class, g.class_names, g.negative_kernels, g.negative_class,
                               view_aspect=g.view_aspect, negative_aspect=g.negative_aspect)
        # all boxes survive to the suppression (shadows must not take the places of the cap)
        run = config.replace(max_detections=None)
        desc = (self._shortlist_desc.get(views.kernels, self.model.config.pool_border)
                if config.shortlist_top_k is not None else None)

        def suppressed(dets: Detections) -> Detections:
            dets = suppress_by_negatives(dets, views, config.negative_iou, config.max_detections, config.negative_mode)
            return dets if finish is None else finish(dets)

        return detect_levels(self.model, levels, size, views.kernels, views.view_class, views.class_names, run,
                             class_desc=desc, view_aspect=views.view_aspect, finish=suppressed, rescue=rescue,
                             counts=counts)

