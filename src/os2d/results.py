"""The one detection output format: :class:`Detections`, image records, the JSON document and JSON Lines.

Every writer of detections - ``os2d detect`` (JSON and JSON Lines), the folder runner, ``os2d eval``'s
``detections.jsonl`` and ``os2d demo`` - builds its records here, so they agree in keys and rounding.

Contract (``version`` 1, README "Output JSON")::

    document:  {"version": 1, "classes": [...], "images": [IMAGE, ...]}
    IMAGE:     {"path": "a.jpg", "width": 640, "height": 480, "detections": [DETECTION, ...]}
               {"path": "b.jpg", "error": "cannot read image b.jpg: ...", "detections": []}
    DETECTION: {"label": "cereal", "score": 0.712345, "box_xyxy": [x1, y1, x2, y2],
                "corners_xy": [[x, y] x 4]}     (score rounded to 6 decimals, pixels to 2)

JSON Lines (``.jsonl``): a header line ``{"format": "os2d-detections", "version": 1, "classes": [...],
"weights": "...", "config": {...}}`` (a sharded run's files also carry ``"shard": {"rank", "world_size"}``),
then one IMAGE per line. Each line is written by one ``write`` call on a file opened for appending (see
:class:`os2d.runner.results.JsonlWriter`), so a crash leaves at most a partial *last* line: :func:`read_jsonl`
ignores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from os2d.errors import Os2dError
from os2d.files import atomic_json_dump

OUTPUT_VERSION = 1
JSONL_FORMAT = "os2d-detections"
SCORE_DECIMALS = 6
PIXEL_DECIMALS = 2
CONFIDENCE_DECIMALS = 4


class DetectionsFileError(Os2dError):
    """A detections file that cannot be used: not an os2d detections file, corrupt, or another run's results."""


@dataclass
class Detections:
    """Detections of one image, sorted by decreasing score.

    Convention: coordinates are pixels of the ORIGINAL image, x right, y down, xyxy without +1.

    Attributes:
        boxes_xyxy: (N, 4) float32.
        scores: (N,) float32, raw pooled correlation (higher = better; not a probability).
        labels: (N,) int64 index into ``class_names``.
        corners_xy: (N, 4, 2) the aligned class grid's corners (class top-left, top-right, bottom-left,
            bottom-right): a parallelogram showing the estimated pose of the class image.
        class_names: names of the labels.
        image_size: (width, height) of the original image.
        levels: with ``image_size="auto"``, the pyramid levels (sqrt(w*h) in pixels) the heads ran at for each
            class name (:mod:`os2d.inference.autoscale`); None otherwise.
        confidence: (N,) float32 in [0, 1], the calibrated probability that each detection is correct
            (:mod:`os2d.calibration`), when the weights carry a calibration; None otherwise.
    """

    boxes_xyxy: Tensor
    scores: Tensor
    labels: Tensor
    corners_xy: Tensor
    class_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    levels: dict[str, list[int]] | None = None
    confidence: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.numel())

    @classmethod
    def empty(cls, class_names: list[str] | None = None, image_size: tuple[int, int] = (0, 0)) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 2),
                   list(class_names or []), image_size)

    @property
    def label_names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels.tolist()]

    def filter(self, keep: Tensor) -> Detections:
        """Subset by a boolean mask or index tensor."""
        return Detections(self.boxes_xyxy[keep], self.scores[keep], self.labels[keep], self.corners_xy[keep],
                          self.class_names, self.image_size, self.levels,
                          None if self.confidence is None else self.confidence[keep])

    def to_records(self) -> list[dict[str, Any]]:
        """The DETECTION records of the output contract (score rounded to 6 decimals, pixels to 2; ``confidence``
        (4 decimals) after ``score`` when the detections have one)."""
        out = []
        conf = self.confidence.tolist() if self.confidence is not None else [None] * len(self)
        for box, score, label, corners, c in zip(self.boxes_xyxy.tolist(), self.scores.tolist(),
                                                 self.labels.tolist(), self.corners_xy.tolist(), conf, strict=True):
            rec: dict[str, Any] = {"label": self.class_names[label], "score": round(float(score), SCORE_DECIMALS)}
            if c is not None:
                rec["confidence"] = round(float(c), CONFIDENCE_DECIMALS)
            rec["box_xyxy"] = [round(v, PIXEL_DECIMALS) for v in box]
            rec["corners_xy"] = [[round(x, PIXEL_DECIMALS), round(y, PIXEL_DECIMALS)] for x, y in corners]
            out.append(rec)
        return out

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], class_names: Sequence[str],
                     image_size: tuple[int, int]) -> Detections:
        """Inverse of :meth:`to_records` (labels matched by name to ``class_names``; missing corners are 0).

        Raises:
            ValueError: a label that is not in ``class_names``.
            KeyError, TypeError: a record without ``label``/``score``/``box_xyxy`` or with malformed values.
        """
        index = {n: i for i, n in enumerate(class_names)}
        unknown = [r["label"] for r in records if r["label"] not in index]
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r}")
        with_conf = bool(records) and all("confidence" in r for r in records)
        return cls(torch.tensor([r["box_xyxy"] for r in records], dtype=torch.float32).view(-1, 4),
                   torch.tensor([r["score"] for r in records], dtype=torch.float32),
                   torch.tensor([index[r["label"]] for r in records], dtype=torch.long),
                   torch.tensor([r.get("corners_xy", [[0, 0]] * 4) for r in records],
                                dtype=torch.float32).view(-1, 4, 2),
                   list(class_names), (int(image_size[0]), int(image_size[1])),
                   confidence=torch.tensor([r["confidence"] for r in records], dtype=torch.float32)
                   if with_conf else None)


def image_record(path: str, size: tuple[int, int] | None, detections: Detections | None = None, *,
                 error: str | None = None) -> dict[str, Any]:
    """The IMAGE record of one image: its size and detections, or (``error`` given, or nothing detected
    because the image could not be read) the error and no detections."""
    if error is not None or detections is None or size is None:
        return {"path": str(path), "error": error or "unknown error", "detections": []}
    record: dict[str, Any] = {"path": str(path), "width": int(size[0]), "height": int(size[1]),
                              "detections": detections.to_records()}
    if detections.levels is not None:
        record["levels"] = {name: list(sizes) for name, sizes in detections.levels.items()}
    return record


def detections_document(classes: Sequence[str], images: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The single JSON document: version, class names (labels) and IMAGE records."""
    return {"version": OUTPUT_VERSION, "classes": list(classes), "images": list(images)}


def write_detections_json(path: str | Path, classes: Sequence[str], images: Sequence[dict[str, Any]]) -> None:
    """Write :func:`detections_document` atomically (temporary file + rename)."""
    atomic_json_dump(path, detections_document(classes, images))


# ---------------------------------------------------------------------------------------------- JSON Lines


def jsonl_line(obj: dict[str, Any]) -> bytes:
    """One JSON Lines line (compact, UTF-8, newline-terminated)."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")


def jsonl_header(classes: Sequence[str], *, weights: str = "", config: dict[str, Any] | None = None,
                 shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """The header line: class names (labels), weights name and inference config, and the shard (rank, world)."""
    header: dict[str, Any] = {"format": JSONL_FORMAT, "version": OUTPUT_VERSION, "classes": list(classes),
                              "weights": weights, "config": config or {}}
    if shard is not None:
        header["shard"] = {"rank": shard[0], "world_size": shard[1]}
    return json.loads(json.dumps(header))  # as it reads back (tuples -> lists), so headers compare equal


@dataclass
class JsonlContents:
    """What :func:`read_jsonl` found.

    Attributes:
        header: the first line (None for an empty file or one cut inside its header).
        records: IMAGE records in file order (a path may repeat when a failed image was retried).
        valid_bytes: length of the complete lines; anything after is a partial line from an interrupted write.
        partial_tail: True when such a partial last line was found (and ignored).
    """

    header: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    valid_bytes: int = 0
    partial_tail: bool = False

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of each path (a retried image's newest result), in order of first appearance."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.records:
            out[rec["path"]] = rec
        return out


def read_jsonl(path: str | Path) -> JsonlContents:
    """Read a detections JSONL file, ignoring a partial last line.

    Raises:
        FileNotFoundError: no such file.
        DetectionsFileError: not an os2d detections file, or a complete line (not the last) that is not a JSON
            object.
    """
    path = Path(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # complete lines end with a newline
    contents = JsonlContents(header=None, valid_bytes=end, partial_tail=end < len(data))
    for i, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DetectionsFileError(f"{path}, line {i}: not valid JSON ({e}); the file is corrupt") from e
        if not isinstance(obj, dict):
            raise DetectionsFileError(f"{path}, line {i}: expected a JSON object")
        if i == 1:
            if obj.get("format") != JSONL_FORMAT:
                raise DetectionsFileError(f"{path} is not an os2d detections JSONL file (first line has no "
                                 f'"format": "{JSONL_FORMAT}")')
            if obj.get("version") != OUTPUT_VERSION:
                raise DetectionsFileError(f"{path}: unsupported detections version {obj.get('version')}")
            contents.header = obj
        elif "path" not in obj:
            raise DetectionsFileError(f"{path}, line {i}: image record without a 'path'")
        else:
            contents.records.append(obj)
    return contents


__all__ = [
    "JSONL_FORMAT",
    "OUTPUT_VERSION",
    "Detections",
    "DetectionsFileError",
    "JsonlContents",
    "detections_document",
    "image_record",
    "jsonl_header",
    "jsonl_line",
    "read_jsonl",
    "write_detections_json",
]
