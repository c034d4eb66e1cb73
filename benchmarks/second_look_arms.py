"""The shared loop of the second-look benchmarks (``verify_top.py``, ``verify_size.py``, ``shape_search.py``).

Per set, one detection pass at default settings with the second look off (the raw detections, capped at
``raw_cap``), then per image one call of ``look`` per arm, every arm on the same raw detections, timed in turn;
VOC mAP and recall at IoU 0.5 and 0.7 and seconds per image for each arm, and one table for all sets.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from cascade_probe import raw_second_look_inputs

from os2d.config import InferenceConfig
from os2d.evaluation.metrics import evaluate_detections


@dataclass(frozen=True)
class ArmRow:
    """One arm on one set: mAP and recall in percent at IoU 0.5 and 0.7, mean seconds of ``look`` per image."""

    set_name: str
    images: int
    arm: Hashable
    map5: float
    recall5: float
    map7: float
    recall7: float
    seconds: float


def arm_parser(default_kind: str) -> Callable[[str], tuple[int, str]]:
    """The ``--arms`` type of a benchmark whose arms are ``N:kind``: ``"160:own"`` -> (160, "own"), ``"160"`` ->
    (160, ``default_kind``)."""

    def parse(text: str) -> tuple[int, str]:
        n, _, kind = text.partition(":")
        return int(n), kind or default_kind

    return parse


def add_set_args(ap: argparse.ArgumentParser) -> None:
    """The options every second-look benchmark takes: sets, weights, which images."""
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")


def run_arms(args: argparse.Namespace, arms: Sequence[Hashable], look: Callable[..., Any], *, raw_cap: int,
             prepare: Callable[..., Any] | None = None) -> list[ArmRow]:
    """``look(det, raw, image, arm, context)`` -> the arm's detections of one image, for every set of ``args.sets``;
    ``context`` is ``prepare(det, set_name)`` once per set (None without ``prepare``)."""
    rows = []
    raw_config = InferenceConfig().replace(max_detections=raw_cap, verify_rescore=0.0)
    for set_name in args.sets:
        names, images, det, raws = raw_second_look_inputs(set_name, args.synth_dir, args.weights, raw_config,
                                                           every=args.every, max_images=args.max_images)
        context = prepare(det, set_name) if prepare else None
        dets: dict[Hashable, list] = {arm: [] for arm in arms}
        seconds = dict.fromkeys(arms, 0.0)
        for raw, image in raws:
            for arm in arms:
                t0 = time.perf_counter()
                dets[arm].append(look(det, raw, image, arm, context))
                seconds[arm] += time.perf_counter() - t0
        for arm, d in dets.items():
            r5, r7 = (evaluate_detections(d, images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
            rows.append(ArmRow(set_name, len(images), arm, 100 * r5.map, 100 * r5.recall, 100 * r7.map,
                               100 * r7.recall, seconds[arm] / len(images)))
            print(f"{set_name} {arm}: mAP@0.5 {100 * r5.map:.2f} mAP@0.7 {100 * r7.map:.2f}", flush=True)
    return rows


def print_table(title: str, rows: list[ArmRow], arm_header: str, label: Callable[[Any], str], *,
                added: bool = False) -> None:
    """The rows as one table; differences against each set's first arm; ``added``: seconds as the time added over
    that first arm (else the arm's own seconds per image)."""
    width = max(len(arm_header), *(len(label(r.arm)) for r in rows))
    time_header = "added s/img" if added else "look s/img"
    print(f"\n{title}, default settings, {torch.get_num_threads()} threads")
    print(f"{'set':<11}{'imgs':>5} {arm_header:<{width}}{'mAP@0.5':>9}{'d':>7}{'recall':>8}{'mAP@0.7':>9}{'d':>7}"
          f"{'rec@0.7':>9}{time_header:>13}")
    print("-" * (70 + width))
    first: dict[str, ArmRow] = {}
    for r in rows:
        b = first.setdefault(r.set_name, r)
        sec = r.seconds - b.seconds if added else r.seconds
        print(f"{r.set_name:<11}{r.images:>5} {label(r.arm):<{width}}{r.map5:>9.2f}{r.map5 - b.map5:>+7.2f}"
              f"{r.recall5:>8.1f}{r.map7:>9.2f}{r.map7 - b.map7:>+7.2f}{r.recall7:>9.1f}{sec:>13.3f}")


__all__ = ["ArmRow", "add_set_args", "print_table", "run_arms"]
