"""A class gallery: class-image kernels computed once, reused for any number of input images, saved to disk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from PIL import Image
from torch import Tensor

from os2d.files import atomic_torch_save
from os2d.inference.colour import NUM_BINS, class_colour
from os2d.io import ImageSource, image_to_tensor, load_image, resize_to_area, validate_class_image

if TYPE_CHECKING:
    from os2d.model.os2d import Os2dModel

GALLERY_FORMAT = "os2d-gallery"
GALLERY_VERSION = 1

# Class-image views for test-time augmentation (reference eval.class_image_augmentation): name -> PIL op.
VIEW_OPS: dict[str, int | None] = {
    "original": None,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "hflip": Image.Transpose.FLIP_LEFT_RIGHT,
}


def class_views(image: Image.Image, *, rotations: bool, horizontal_flip: bool) -> list[tuple[str, Image.Image]]:
    """The views of a class image: itself, + 90/180/270 rotations, + horizontal flip."""
    names = ["original"]
    if rotations:
        names += ["rot90", "rot180", "rot270"]
    if horizontal_flip:
        names.append("hflip")
    return [(n, image if VIEW_OPS[n] is None else image.transpose(VIEW_OPS[n])) for n in names]


class EncodedViews(NamedTuple):
    """Class views encoded by a model: ``gallery.add(name, *encoded)`` adds them."""

    kernels: Tensor  # (V, S*S, C) float32 on the CPU
    view_names: list[str]  # (V,) "original", "rot90", ...
    aspect: Tensor  # (V,) float32 aspect ratio w / h of each view's image (anchors, ModelConfig.anchor_aspect_power)
    colour: Tensor  # (V, 36) float32 colour histogram of each view's image (os2d.inference.colour)


@torch.no_grad()
def encode_class_images(model: Os2dModel, images: Sequence[ImageSource], *, rotations: bool = False,
                        horizontal_flip: bool = False) -> EncodedViews:
    """The one class-encoding path: class images -> kernels of all their views.

    Each image is loaded (any :data:`os2d.io.ImageSource`), checked (:func:`os2d.io.validate_class_image`),
    expanded into its views (:func:`class_views`), resized to area ``class_image_size^2`` and encoded by
    ``model.class_kernels`` on the model's device.

    Returns:
        :class:`EncodedViews`: kernels (V, S*S, C) float32 on the CPU, V = len(images) * views per image; the
        kind of each view ("original", "rot90", ...); the aspect ratio and colour histogram of each view.
    """
    device = next(model.parameters()).device
    size = model.config.class_image_size
    tensors, view_names, aspect, colour = [], [], [], []
    for src in images:
        img = load_image(src)
        validate_class_image(img)
        for view_name, view in class_views(img, rotations=rotations, horizontal_flip=horizontal_flip):
            pixels = image_to_tensor(resize_to_area(view, size))  # (3, h, w) in [0, 1]
            tensors.append(pixels.to(device))
            view_names.append(view_name)
            aspect.append(view.width / view.height)
            colour.append(class_colour(pixels))
    return EncodedViews(model.class_kernels(tensors).detach().cpu().float(), view_names,
                        torch.tensor(aspect, dtype=torch.float32), torch.stack(colour))


@dataclass
class ClassGallery:
    """Kernels of class views and the class each view belongs to.

    Attributes:
        class_names: names, index = label.
        kernels: (V, S*S, C) normalised class kernels (see ``os2d.model.correlation.class_kernels``).
        view_class: (V,) int64 class index of each view (several views per class: rotations, flips,
            several class images = few-shot; all views of a class are merged before NMS).
        view_names: (V,) kind of each view ("original", "rot90", ...).
        model_id: fingerprint of the model that computed the kernels; a gallery only works with that model.
        negative_kernels: (N, S*S, C) kernels of negative exemplars ("not this": the neighbouring flavour,
            the competitor's logo), or None; never detected themselves (:mod:`os2d.inference.negatives`).
        negative_class: (N,) int64 index of the class each negative view belongs to.
        negative_view_names: (N,) kind of each negative view.
        view_aspect: (V,) float32 aspect ratio (w / h) of each view's class image (1 when unknown: galleries
            saved before it was kept); the anchors of models with ``anchor_aspect_power`` take it.
        negative_aspect: (N,) the same for the negative views.
        view_colour: (V, 36) float32 colour histogram of each view's class image (:mod:`os2d.inference.colour`;
            NaN rows when unknown: galleries saved before it was kept, whose scores it then leaves unchanged).
    """

    class_names: list[str] = field(default_factory=list)
    kernels: Tensor | None = None
    view_class: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    view_names: list[str] = field(default_factory=list)
    model_id: str = ""
    negative_kernels: Tensor | None = None
    negative_class: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    negative_view_names: list[str] = field(default_factory=list)
    view_aspect: Tensor = field(default_factory=lambda: torch.zeros(0))
    negative_aspect: Tensor = field(default_factory=lambda: torch.zeros(0))
    view_colour: Tensor = field(default_factory=lambda: torch.zeros(0, NUM_BINS))

    def __post_init__(self) -> None:  # a gallery built without aspect ratios / colours: square, colour unknown
        if self.view_aspect.numel() == 0 and self.view_class.numel():
            self.view_aspect = torch.ones(self.view_class.numel())
        if self.view_colour.shape[0] == 0 and self.view_class.numel():
            self.view_colour = _colour(None, self.view_class.numel())
        if self.negative_aspect.numel() == 0 and self.negative_class.numel():
            self.negative_aspect = torch.ones(self.negative_class.numel())

    def __len__(self) -> int:
        return len(self.class_names)

    @property
    def num_views(self) -> int:
        return int(self.view_class.numel())

    def add(self, name: str, kernels: Tensor, view_names: list[str], aspect: Tensor | None = None,
            colour: Tensor | None = None) -> None:
        """Append views (V', S*S, C) to class ``name`` (created if new); ``aspect`` (V',) their aspect ratios
        (None: 1, square); ``colour`` (V', 36) their colour histograms (None: unknown)."""
        if kernels.shape[0] != len(view_names):
            raise ValueError("one view name per kernel expected")
        aspect = _aspect(aspect, kernels.shape[0])
        colour = _colour(colour, kernels.shape[0])
        if name not in self.class_names:
            self.class_names.append(name)
        idx = self.class_names.index(name)
        kernels = kernels.detach().cpu().float()
        if self.kernels is not None and self.kernels.shape[1:] != kernels.shape[1:]:
            raise ValueError(f"kernel shape {tuple(kernels.shape[1:])} differs from the gallery's "
                             f"{tuple(self.kernels.shape[1:])}: computed by another model?")
        self.kernels = kernels if self.kernels is None else torch.cat([self.kernels, kernels])
        self.view_class = torch.cat([self.view_class, torch.full((kernels.shape[0],), idx, dtype=torch.long)])
        self.view_names += view_names
        self.view_aspect = torch.cat([self.view_aspect, aspect])
        self.view_colour = torch.cat([self.view_colour, colour])

    def add_negative(self, name: str, kernels: Tensor, view_names: list[str], aspect: Tensor | None = None) -> None:
        """Append negative views (N', S*S, C) to class ``name`` (which must exist): pictures of what it is not."""
        if name not in self.class_names:
            raise KeyError(f"no class named {name!r} in the gallery: add the class before its negatives")
        if kernels.shape[0] != len(view_names):
            raise ValueError("one view name per kernel expected")
        aspect = _aspect(aspect, kernels.shape[0])
        kernels = kernels.detach().cpu().float()
        if self.kernels is not None and self.kernels.shape[1:] != kernels.shape[1:]:
            raise ValueError(f"kernel shape {tuple(kernels.shape[1:])} differs from the gallery's "
                             f"{tuple(self.kernels.shape[1:])}: computed by another model?")
        idx = self.class_names.index(name)
        neg = self.negative_kernels
        self.negative_kernels = kernels if neg is None else torch.cat([neg, kernels])
        self.negative_class = torch.cat([self.negative_class, torch.full((kernels.shape[0],), idx, dtype=torch.long)])
        self.negative_view_names = self.negative_view_names + view_names
        self.negative_aspect = torch.cat([self.negative_aspect, aspect])

    def negatives_of(self, name: str) -> int:
        """How many negative views class ``name`` has."""
        if name not in self.class_names:
            return 0
        return int((self.negative_class == self.class_names.index(name)).sum())

    def remove(self, name: str) -> None:
        """Delete a class, its views and its negatives; later labels shift down by one."""
        if name not in self.class_names:
            raise KeyError(f"no class named {name!r} in the gallery")
        idx = self.class_names.index(name)
        keep = self.view_class != idx
        self.kernels, self.view_names, self.view_aspect, self.view_colour = self._views_where(keep)
        vc = self.view_class[keep]
        self.view_class = vc - (vc > idx).long()
        keep_neg = self.negative_class != idx
        self.negative_kernels, self.negative_view_names, self.negative_aspect = self._negatives_where(keep_neg)
        nc = self.negative_class[keep_neg]
        self.negative_class = nc - (nc > idx).long()
        del self.class_names[idx]

    def copy(self) -> ClassGallery:
        """A gallery that can be changed without changing this one (kernel tensors are shared: :meth:`add`
        and :meth:`remove` replace tensors, never write into them)."""
        return ClassGallery(list(self.class_names), self.kernels, self.view_class, list(self.view_names),
                            self.model_id, self.negative_kernels, self.negative_class, list(self.negative_view_names),
                            self.view_aspect, self.negative_aspect, self.view_colour)

    def subset(self, names: Sequence[str]) -> ClassGallery:
        """The classes ``names`` (in that order, labels renumbered) with all their views and negatives."""
        missing = [n for n in names if n not in self.class_names]
        if missing:
            raise KeyError(f"no class named {', '.join(map(repr, missing))} in the gallery")
        out = ClassGallery(model_id=self.model_id)
        for name in names:
            idx = self.class_names.index(name)
            out.add(name, *self._views_where(self.view_class == idx))
            if bool((self.negative_class == idx).any()):
                out.add_negative(name, *self._negatives_where(self.negative_class == idx))
        return out

    def _negatives_where(self, keep: Tensor) -> tuple[Tensor | None, list[str], Tensor]:
        """Negative kernels (N', S*S, C) (None when none is kept), names and aspect ratios where ``keep`` (N,) is
        True."""
        if self.negative_kernels is None or not bool(keep.any()):
            return None, [], torch.zeros(0)
        names = [v for v, k in zip(self.negative_view_names, keep.tolist(), strict=True) if k]
        return self.negative_kernels[keep], names, self.negative_aspect[keep]

    def _views_where(self, keep: Tensor) -> tuple[Tensor, list[str], Tensor, Tensor]:
        """Kernels (V', S*S, C), names, aspect ratios and colour histograms of the views where the (V,) bool mask
        ``keep`` is True."""
        assert self.kernels is not None
        names = [v for v, k in zip(self.view_names, keep.tolist(), strict=True) if k]
        return self.kernels[keep], names, self.view_aspect[keep], self.view_colour[keep]

    def to_payload(self) -> dict[str, Any]:
        """The gallery as a dict of tensors, strings and lists (``torch.load(weights_only=True)`` reads it)."""
        return {
            "format": GALLERY_FORMAT, "version": GALLERY_VERSION, "class_names": list(self.class_names),
            "kernels": self.kernels if self.kernels is not None else torch.zeros(0),
            "view_class": self.view_class, "view_names": list(self.view_names), "model_id": self.model_id,
            "negative_kernels": self.negative_kernels if self.negative_kernels is not None else torch.zeros(0),
            "negative_class": self.negative_class, "negative_view_names": list(self.negative_view_names),
            "view_aspect": self.view_aspect, "negative_aspect": self.negative_aspect,
            "view_colour": self.view_colour,
        }

    @classmethod
    def from_payload(cls, payload: Any, *, source: str = "payload") -> ClassGallery:
        """Inverse of :meth:`to_payload`, checked: every field present, of its type and consistent (one class
        index in ``[0, len(class_names))`` and one name per kernel).

        Raises:
            ValueError: one line naming ``source``: not a gallery, another version, or malformed.
        """
        if not isinstance(payload, dict) or payload.get("format") != GALLERY_FORMAT:
            raise ValueError(f"{source} is not an os2d gallery file")
        if payload.get("version") != GALLERY_VERSION:
            raise ValueError(f"{source}: unsupported gallery version {payload.get('version')}")
        problem = _payload_problem(payload)
        if problem is not None:
            raise ValueError(f"{source}: malformed os2d gallery: {problem}")
        kernels = payload["kernels"].float() if payload["kernels"].numel() else None
        neg = payload.get("negative_kernels")  # absent in galleries saved before negatives existed
        negative_class = payload.get("negative_class", torch.zeros(0, dtype=torch.long)).long()
        # aspect ratios: absent in galleries saved before they were kept (square, as those models' anchors)
        return cls(list(payload["class_names"]), kernels, payload["view_class"].long(),
                   list(payload["view_names"]), str(payload["model_id"]),
                   neg.float() if neg is not None and neg.numel() else None, negative_class,
                   list(payload.get("negative_view_names", [])),
                   _aspect(payload.get("view_aspect"), payload["view_class"].numel()),
                   _aspect(payload.get("negative_aspect") if "negative_class" in payload else None,
                           negative_class.numel()),
                   _colour(payload.get("view_colour"), payload["view_class"].numel()))  # absent: unknown

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename): an interrupted save never leaves a broken gallery."""
        atomic_torch_save(path, self.to_payload())

    @classmethod
    def load(cls, path: str | Path) -> ClassGallery:
        """Read a gallery saved by :meth:`save` (through the one safe reader of tensor files,
        :func:`os2d.weights.read_weights_file`: no pickled code ever runs).

        Raises:
            FileNotFoundError: no such file.
            ValueError: one line: not a tensor file, unsafe or corrupt, or not a valid gallery.
        """
        from os2d.weights import WeightsError, read_weights_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gallery not found: {path}")
        try:
            d = read_weights_file(path)
        except WeightsError as e:  # its one-line reason, said of a gallery
            raise ValueError(f"{path} is not a readable os2d gallery file ({e})") from None
        return cls.from_payload(d, source=str(path))


def _aspect(aspect: Any, count: int) -> Tensor:
    """(count,) float32 aspect ratios: ``aspect`` checked (finite, positive), or ones when None."""
    if aspect is None:
        return torch.ones(count)
    if not isinstance(aspect, Tensor) or aspect.shape != (count,):
        raise ValueError(f"expected {count} aspect ratios, got {getattr(aspect, 'shape', aspect)}")
    aspect = aspect.detach().cpu().float()
    if not bool(torch.isfinite(aspect).all()) or bool((aspect <= 0).any()):
        raise ValueError("aspect ratios must be finite and positive")
    return aspect


def _colour(colour: Any, count: int) -> Tensor:
    """(count, 36) float32 colour histograms: ``colour`` checked (non-negative where known, NaN rows = unknown),
    or NaN rows when None."""
    if colour is None:
        return torch.full((count, NUM_BINS), float("nan"))
    if not isinstance(colour, Tensor) or colour.shape != (count, NUM_BINS):
        raise ValueError(f"expected {count} colour histograms of {NUM_BINS} bins, got "
                         f"{tuple(getattr(colour, 'shape', ())) or colour}")
    colour = colour.detach().cpu().float()
    known = colour[~torch.isnan(colour).any(dim=-1)]
    if not bool(torch.isfinite(known).all()) or bool((known < 0).any()):
        raise ValueError("colour histograms must be finite and non-negative")
    return colour


def _payload_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with a gallery payload's fields (None: nothing)."""
    missing = [k for k in ("class_names", "kernels", "view_class", "view_names", "model_id") if k not in payload]
    if missing:
        return f"missing {', '.join(missing)}"
    names, kernels, view_class, views = (payload[k] for k in ("class_names", "kernels", "view_class", "view_names"))
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return "class_names must be a list of non-empty strings"
    if len(set(names)) != len(names):
        return "class_names has duplicates"
    if not isinstance(kernels, Tensor) or not (kernels.numel() == 0 or kernels.dim() == 3):
        return "kernels must be a (V, S*S, C) tensor"
    if not isinstance(view_class, Tensor) or view_class.dim() != 1 or view_class.is_floating_point():
        return "view_class must be a 1-D integer tensor"
    num_views = kernels.shape[0] if kernels.numel() else 0
    if view_class.numel() != num_views or not isinstance(views, list) or len(views) != num_views:
        return f"{num_views} kernels but {view_class.numel()} view classes and {len(views)} view names"
    if num_views and not (0 <= int(view_class.min()) and int(view_class.max()) < len(names)):
        return f"a view's class index is outside the {len(names)} classes"
    if kernels.numel() and not bool(torch.isfinite(kernels).all()):
        return "kernels hold nan or inf values"
    return _negatives_problem(payload, len(names), kernels)


def _negatives_problem(payload: dict[str, Any], num_classes: int, kernels: Tensor) -> str | None:
    """What is wrong with the optional negative-exemplar fields of a payload (None: nothing)."""
    keys = ("negative_kernels", "negative_class", "negative_view_names")
    present = [k for k in keys if k in payload]
    if not present:
        return None
    if len(present) != len(keys):
        return f"missing {', '.join(k for k in keys if k not in payload)}"
    neg, neg_class, neg_names = (payload[k] for k in keys)
    if not isinstance(neg, Tensor) or not (neg.numel() == 0 or neg.dim() == 3):
        return "negative_kernels must be a (N, S*S, C) tensor"
    if not isinstance(neg_class, Tensor) or neg_class.dim() != 1 or neg_class.is_floating_point():
        return "negative_class must be a 1-D integer tensor"
    n = neg.shape[0] if neg.numel() else 0
    if neg_class.numel() != n or not isinstance(neg_names, list) or len(neg_names) != n:
        return f"{n} negative kernels but {neg_class.numel()} classes and {len(neg_names)} view names"
    if n and not (0 <= int(neg_class.min()) and int(neg_class.max()) < num_classes):
        return f"a negative's class index is outside the {num_classes} classes"
    if n and kernels.numel() and neg.shape[1:] != kernels.shape[1:]:
        return "negative_kernels and kernels differ in shape"
    if n and not bool(torch.isfinite(neg).all()):
        return "negative_kernels hold nan or inf values"
    return None
