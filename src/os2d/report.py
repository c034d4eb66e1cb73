"""Shelf reports from the detections of a shelf photo: facings per class, shelf rows, the order of products in
each row, and a comparison with an expected planogram.

One label per facing: a facing is one product, but per-class NMS lets one object be detected as two look-alike
classes. Among the counted detections of different classes that overlap with IoU >= ``one_label_iou``
(:data:`ONE_LABEL_IOU`, 0.5) only the best-scoring one is kept (:func:`os2d.inference.one_label.cross_class_keep`).
Chosen by a rule written before the measurement (``recipes/cross_class/rule.txt``; README, Shelf reports): on the
generated 81-product shelves it lowered the count error of the images that decided it from 0.92 to 0.64.

Rows: detections (best first, above a score the caller chooses) are taken top to bottom by their centre; a box
joins the row whose vertical band (the mean top and bottom of its boxes) it overlaps most, when that overlap is
at least half the smaller height, else it starts a new row. Rows are numbered from 1 at the top; positions from
1 at the left (by box centre).

Planogram CSV: header ``class,row,facings`` (one line per class and row). A comparison line per class and row
says ``ok``, ``missing`` (fewer facings than expected), ``extra`` (more), or ``misplaced`` (facings in a row
where the class is not expected, while it is expected in another row).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from os2d.errors import Os2dError
from os2d.inference.one_label import cross_class_keep
from os2d.results import Detections

ONE_LABEL_IOU = 0.5  # counted detections of different classes overlapping this much are one facing (None: off)


class PlanogramError(Os2dError):
    """A planogram file that cannot be read (missing, no header, a bad row)."""


@dataclass(frozen=True)
class Facing:
    """One detected product facing: its shelf ``row`` and ``position`` (1-based), class, score and box."""

    row: int
    position: int
    label: str
    score: float
    box_xyxy: tuple[float, float, float, float]


@dataclass(frozen=True)
class ShelfReport:
    """Facings of one photo, ordered by row, then position; ``bands`` are the rows' mean (top, bottom) in pixels."""

    facings: tuple[Facing, ...]
    bands: tuple[tuple[float, float], ...] = ()
    min_score: float | None = None
    one_label_iou: float | None = None

    @property
    def num_rows(self) -> int:
        return max((f.row for f in self.facings), default=0)

    def counts(self) -> dict[str, int]:
        """Facings per class."""
        return dict(Counter(f.label for f in self.facings))

    def row_counts(self) -> dict[tuple[str, int], int]:
        """Facings per (class, row)."""
        return dict(Counter((f.label, f.row) for f in self.facings))

    def rows(self) -> list[list[str]]:
        """The classes of each row, left to right."""
        out: list[list[str]] = [[] for _ in range(self.num_rows)]
        for f in self.facings:
            out[f.row - 1].append(f.label)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``min_score``, ``one_label_iou``, ``facings`` per class, ``rows`` (band and classes, left to
        right) and ``items`` (one per facing: row, position, label, score, box)."""
        rows = [{"row": i + 1, "top": round(t, 1), "bottom": round(b, 1), "classes": r}
                for i, ((t, b), r) in enumerate(zip(self.bands, self.rows(), strict=True))]
        items = [{"row": f.row, "position": f.position, "label": f.label, "score": round(f.score, 6),
                  "box_xyxy": [round(v, 2) for v in f.box_xyxy]} for f in self.facings]
        return {"min_score": self.min_score, "one_label_iou": self.one_label_iou, "facings": self.counts(),
                "rows": rows, "items": items}


Box = tuple[float, float, float, float]


def _as_items(dets: Detections | Sequence[Mapping[str, Any]]) -> list[tuple[str, float, Box]]:
    """(label, score, box) of :class:`Detections` or of detection records (``label``, ``score``, ``box_xyxy``)."""
    if isinstance(dets, Detections):
        return [(dets.class_names[int(lab)], float(s), tuple(float(v) for v in b))  # type: ignore[misc]
                for lab, s, b in zip(dets.labels.tolist(), dets.scores.tolist(), dets.boxes_xyxy.tolist(),
                                     strict=True)]
    out = []
    for n, d in enumerate(dets):
        try:
            box = tuple(float(v) for v in d["box_xyxy"])
            item = (str(d["label"]), float(d["score"]), box)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"detection {n}: needs 'label', 'score' and 'box_xyxy' [x1, y1, x2, y2]") from None
        if len(box) != 4 or not all(math.isfinite(v) for v in (*box, item[1])):
            raise ValueError(f"detection {n}: 'box_xyxy' must be 4 finite numbers and 'score' finite")
        out.append(item)  # type: ignore[arg-type]
    return out


def one_label(items: list[tuple[str, float, Box]], iou: float) -> list[tuple[str, float, Box]]:
    """``items`` (label, score, box) without those that a better-scoring item of another label overlaps with IoU >=
    ``iou``, in their order."""
    if len(items) < 2:
        return items
    index: dict[str, int] = {}
    labels = torch.tensor([index.setdefault(lab, len(index)) for lab, _, _ in items])
    keep = cross_class_keep(torch.tensor([b for _, _, b in items], dtype=torch.float64),
                            torch.tensor([s for _, s, _ in items], dtype=torch.float64), labels, iou)
    return [it for it, k in zip(items, keep.tolist(), strict=True) if k]


def shelf_report(dets: Detections | Sequence[Mapping[str, Any]], *, min_score: float | None = None,
                 one_label_iou: float | None = ONE_LABEL_IOU) -> ShelfReport:
    """Group the detections scoring at least ``min_score`` (all when None) into shelf rows.

    ``dets``: :class:`~os2d.results.Detections` or detection records as in the JSON output. ``one_label_iou``: of
    the counted detections of different classes that overlap with IoU >= this, only the best-scoring one counts
    (module docstring); None counts them all.
    """
    if one_label_iou is not None and not 0.0 < one_label_iou <= 1.0:  # also refuses nan
        raise ValueError(f"one_label_iou must be in (0, 1] or None, got {one_label_iou}")
    items = [it for it in _as_items(dets) if min_score is None or it[1] >= min_score]
    if one_label_iou is not None:
        items = one_label(items, one_label_iou)
    bands: list[list[float]] = []  # per row: sum of tops, sum of bottoms, count
    members: list[list[int]] = []
    for i in sorted(range(len(items)), key=lambda i: (items[i][2][1] + items[i][2][3]) / 2):
        x1, y1, x2, y2 = items[i][2]
        best, best_overlap = None, 0.0
        for r, (top, bottom, n) in enumerate(bands):
            t, b = top / n, bottom / n
            overlap = min(y2, b) - max(y1, t)
            if overlap >= 0.5 * min(y2 - y1, b - t) and overlap > best_overlap:
                best, best_overlap = r, overlap
        if best is None:
            bands.append([y1, y2, 1])
            members.append([i])
        else:
            bands[best][0] += y1
            bands[best][1] += y2
            bands[best][2] += 1
            members[best].append(i)
    order = sorted(range(len(bands)), key=lambda r: (bands[r][0] + bands[r][1]) / bands[r][2])
    facings = []
    for row, r in enumerate(order, start=1):
        for pos, i in enumerate(sorted(members[r], key=lambda i: (items[i][2][0] + items[i][2][2]) / 2), start=1):
            facings.append(Facing(row, pos, items[i][0], items[i][1], items[i][2]))
    row_bands = tuple((bands[r][0] / bands[r][2], bands[r][1] / bands[r][2]) for r in order)
    return ShelfReport(tuple(facings), row_bands, min_score, one_label_iou)


def read_planogram(path: str | os.PathLike[str]) -> dict[tuple[str, int], int]:
    """``class,row,facings`` CSV file -> expected facings per (class, row)."""
    p = Path(path)
    if not p.is_file():
        raise PlanogramError(f"planogram not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PlanogramError(f"{p}: not a UTF-8 text file") from None
    return parse_planogram(text, source=str(p))


def parse_planogram(text: str, *, source: str = "planogram") -> dict[tuple[str, int], int]:
    """``class,row,facings`` CSV text -> expected facings per (class, row) (lines of one key add up)."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if header != ["class", "row", "facings"]:
        raise PlanogramError(f"{source}: the header must be 'class,row,facings', got {','.join(header) or 'nothing'}")
    plan: dict[tuple[str, int], int] = {}
    for n, line in enumerate(reader, start=2):
        if not line or not "".join(line).strip():
            continue
        try:
            name, row, facings = (v.strip() for v in line)
            key, count = (name, int(row)), int(facings)
            if not name or key[1] < 1 or count < 0:
                raise ValueError
        except ValueError:
            raise PlanogramError(f"{source} row {n}: expected a class name, a row >= 1 and facings >= 0, got "
                                 f"{','.join(line)!r}") from None
        plan[key] = plan.get(key, 0) + count
    return plan


def compare_planogram(report: ShelfReport, plan: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    """One line per (class, row) expected or found: ``class, row, expected, found, status``."""
    found = report.row_counts()
    expected_rows: dict[str, set[int]] = {}
    for (name, row), n in plan.items():
        if n > 0:
            expected_rows.setdefault(name, set()).add(row)
    out = []
    for name, row in sorted(set(plan) | set(found), key=lambda k: (k[1], k[0])):
        e, f = plan.get((name, row), 0), found.get((name, row), 0)
        if e == f:
            status = "ok"
        elif f < e:
            status = "missing"
        elif e == 0 and expected_rows.get(name, set()) - {row}:
            status = "misplaced"
        else:
            status = "extra"
        out.append({"class": name, "row": row, "expected": e, "found": f, "status": status})
    return out


__all__ = ["ONE_LABEL_IOU", "Facing", "PlanogramError", "ShelfReport", "compare_planogram", "one_label", "parse_planogram",
           "read_planogram", "shelf_report"]
