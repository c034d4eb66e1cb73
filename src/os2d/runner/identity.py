"""What makes two runs the same run, by content: a resumed or merged JSONL file only takes records of a run with
the same model weights and the same class images (never judged by a name or a path, which can stay the same
while the file behind it changes)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from os2d.gallery import ClassGallery
from os2d.weights.download import sha256_file

DIGEST_CHARS = 16  # hex digits kept (as os2d.weights.model_fingerprint)


def class_images_digest(classes: Sequence[tuple[str, str | Path]], gallery: str | Path | None = None) -> str:
    """A digest of the class images' file bytes, in order with their class names (and of a saved gallery file).

    Stable across machines and devices (unlike the kernels computed from the images, whose float rounding may
    differ between CPUs and GPUs). Replacing a class picture under the same name changes it; moving the same
    picture elsewhere does not.
    """
    h = hashlib.sha256()
    if gallery is not None:
        h.update(b"gallery\0" + sha256_file(gallery).encode() + b"\0")
    for name, path in classes:
        h.update(name.encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return h.hexdigest()[:DIGEST_CHARS]


def gallery_digest(gallery: ClassGallery) -> str:
    """A digest of a gallery's classes, views and kernel values (reproducible on one machine; across machines
    prefer :func:`class_images_digest` of the class image files)."""
    h = hashlib.sha256()
    for name in gallery.class_names:
        h.update(name.encode() + b"\0")
    h.update(gallery.view_class.numpy().tobytes())
    h.update("\0".join(gallery.view_names).encode())
    if gallery.kernels is not None:
        h.update(gallery.kernels.contiguous().numpy().tobytes())
    return h.hexdigest()[:DIGEST_CHARS]


__all__ = ["class_images_digest", "gallery_digest"]
