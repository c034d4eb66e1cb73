"""The shared loop of the benchmarks that time whole detections per arm (``default_time.py``, ``auto_max_size.py``).

A set's classes registered on one detector, a warm-up image through every arm, then every image through every arm
in turn: round-robin, so the machine's slow phases hit all arms alike, with the order rotated from image to image so
that no arm always runs after the same one.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from cascade_probe import load_set

from os2d.detector import Detector
from os2d.evaluation.harness import _class_names, _load_class_images
from os2d.io import load_image


def run_round_robin(set_name: str, arms: dict[Hashable, dict[str, Any]], *, weights: str = "default",
                    every: int = 1, synth_dir: Path) -> tuple[list[str], list, dict[Hashable, float], dict]:
    """Every ``every``-th image of the set through ``Detector.detect(image, **arms[arm])`` for every arm.

    Returns the class names, the images (records with their boxes), the mean seconds per image of each arm and
    each arm's detections (one per image)."""
    dataset = load_set(set_name, synth_dir)
    det = Detector.from_weights(weights)
    names = _class_names(dataset)
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    images = dataset.images[::every]
    warm = load_image(images[0].path)
    for changes in arms.values():
        det.detect(warm, **changes)
    seconds = dict.fromkeys(arms, 0.0)
    dets: dict[Hashable, list] = {a: [] for a in arms}
    order = list(arms)
    for i, rec in enumerate(images):
        pil = load_image(rec.path)
        for arm in order[i % len(order):] + order[: i % len(order)]:
            t0 = time.perf_counter()
            dets[arm].append(det.detect(pil, **arms[arm]))
            seconds[arm] += time.perf_counter() - t0
    return names, images, {a: s / len(images) for a, s in seconds.items()}, dets


__all__ = ["run_round_robin"]
