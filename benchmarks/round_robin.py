"""The shared timing loops of the benchmarks: whole detections per arm (``default_time.py``, ``auto_max_size.py``,
``default_arms.py``, ``box_head.py``, ``probe_aspect.py``) and one call per arm (``same_padding.py``, ``conv_act.py``).

A set's classes registered on one detector, a warm-up image through every arm, then every image through every arm
in turn: round-robin, so the machine's slow phases hit all arms alike, with the order rotated from image to image so
that no arm always runs after the same one.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import torch
from cascade_probe import add_set_classes, load_set
from torch import Tensor

from os2d.detector import Detector
from os2d.io import load_image


def run_round_robin(set_name: str, arms: dict[Hashable, dict[str, Any]], *, weights: str = "default",
                    every: int = 1, max_images: int | None = None, synth_dir: Path,
                    detector: Detector | None = None, before: Callable[[Hashable], None] | None = None,
                    arm_weights: dict[Hashable, str] | None = None
                    ) -> tuple[list[str], list, dict[Hashable, float], dict]:
    """Every ``every``-th image of the set (at most ``max_images``) through ``Detector.detect(image,
    **arms[arm])`` for every arm. ``detector``: one to use instead of ``weights`` (the set's classes are added to
    it); ``before(arm)``: called before each of the arm's detections (e.g. to switch a patched-in experiment);
    ``arm_weights``: weights of their own for some arms (one detector per weights, each with the set's classes).

    Returns the class names, the images (records with their boxes), the mean seconds per image of each arm and
    each arm's detections (one per image)."""
    dataset = load_set(set_name, synth_dir)
    det = detector or Detector.from_weights(weights)
    names = add_set_classes(det, dataset)
    own: dict[str, Detector] = {}
    for w in dict.fromkeys((arm_weights or {}).values()):
        own[w] = Detector.from_weights(w)
        if add_set_classes(own[w], dataset) != names:
            raise RuntimeError(f"{w}: the set's classes came out in another order")
    detectors = {a: own[arm_weights[a]] if arm_weights and a in arm_weights else det for a in arms}
    images = dataset.images[::every][:max_images]

    def detect(arm: Hashable, image):
        if before is not None:
            before(arm)
        return detectors[arm].detect(image, **arms[arm])

    warm = load_image(images[0].path)
    for arm in arms:
        detect(arm, warm)
    seconds = dict.fromkeys(arms, 0.0)
    dets: dict[Hashable, list] = {a: [] for a in arms}
    order = list(arms)
    for i, rec in enumerate(images):
        pil = load_image(rec.path)
        for arm in order[i % len(order):] + order[: i % len(order)]:
            t0 = time.perf_counter()
            dets[arm].append(detect(arm, pil))
            seconds[arm] += time.perf_counter() - t0
        if (i + 1) % 10 == 0:
            print(f"{set_name}: {i + 1}/{len(images)}", file=sys.stderr, flush=True)
    return names, images, {a: s / len(images) for a, s in seconds.items()}, dets


def alternating_medians(arms: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each arm's call over ``repeats`` rounds (one warm-up round first; every round calls every
    arm, the order rotated per round) and each arm's last output."""
    times: dict[str, list[float]] = {a: [] for a in arms}
    outs: dict[str, Any] = {}
    names = list(arms)
    for r in range(repeats + 1):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            outs[name] = arms[name]()
            if r:  # the first round warms up (folded copy, allocator)
                times[name].append(time.perf_counter() - t0)
    return {a: statistics.median(t) for a, t in times.items()}, outs


def backbone_inputs() -> dict[str, Tensor]:
    """The two inputs the backbone benchmarks time (``same_padding.py``, ``conv_act.py``): a 1024x1365 photo and a
    batch of 16 crops of the second look's 160x160, uniform noise from seed 0."""
    gen = torch.Generator().manual_seed(0)
    return {"photo 1024x1365": torch.rand(1, 3, 1024, 1365, generator=gen),
            "16 crops 160x160": torch.rand(16, 3, 160, 160, generator=gen)}


__all__ = ["alternating_medians", "backbone_inputs", "run_round_robin"]
