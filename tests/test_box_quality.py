"""benchmarks/box_quality.py: the first match of each ground-truth box, its IoU, aspect and area ratios."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from os2d.data.records import ImageRecord
from os2d.results import Detections

ROOT = Path(__file__).resolve().parents[1]


def load_box_quality():
    spec = importlib.util.spec_from_file_location("box_quality", ROOT / "benchmarks" / "box_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def detections(boxes, labels) -> Detections:  # already sorted by score, best first
    n = len(boxes)
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.linspace(1, 0.5, n),
                      torch.tensor(labels), torch.zeros(n, 4, 2), class_names=["a", "b"])


def test_first_match_is_the_best_ranked_overlap_of_the_same_class():
    bq = load_box_quality()
    image = ImageRecord("im", Path("im.jpg"), 200, 100, boxes_xyxy=np.array([[0, 0, 100, 50]], np.float32),
                        labels=np.array([0]), difficult=np.array([False]))
    dets = detections([[0, 0, 100, 50],    # class b: another class, ignored
                       [150, 0, 190, 40],  # class a, no overlap
                       [0, 0, 50, 50],     # class a, IoU 0.5: the first match
                       [0, 0, 100, 50]],   # class a, perfect but ranked lower
                      [1, 0, 0, 0])
    ious, aspects, areas = bq.first_matches(SimpleNamespace(images=[image], detections=[dets]))
    assert ious == pytest.approx([0.5])
    assert aspects == pytest.approx([math.log(1.0 / 2.0)])  # a 1:1 box on a 2:1 object
    assert areas == pytest.approx([math.log(0.5)])
    assert bq.quartiles(ious) == "-"  # too few values for quartiles
    empty = detections([[150, 0, 190, 40]], [0])
    assert bq.first_matches(SimpleNamespace(images=[image], detections=[empty])) == ([], [], [])
