"""Calibrated confidence: the probability that a detection is correct (IoU >= 0.5 with an object of its class),
from its raw score.

A score is a cosine correlation, not a probability: what 0.6 means depends on the model and the data. A
:class:`Calibration` maps it to ``confidence = sigmoid(a * score + b)`` (Platt scaling), fitted on detections of
validation data labelled correct or not, and carries the default threshold: the lowest confidence at which the
detections kept reach a target precision (0.9) on that data. It is stored in the weights file (``"calibration"``
in an os2d checkpoint) and applied by :class:`~os2d.detector.Detector` (``Detections.confidence``).

Measures: :func:`expected_calibration_error` (10 equal-width bins, weighted by their counts) and
:func:`reliability` (per bin: count, mean confidence, share correct).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from os2d.errors import Os2dError
from os2d.ops import box_iou

CALIBRATION_KIND = "platt"


class CalibrationError(Os2dError):
    """A calibration that cannot be used (malformed entry in a weights file) or fitted (no correct detection)."""


@dataclass(frozen=True)
class Calibration:
    """``confidence = sigmoid(a * score + b)``; ``threshold``: the default confidence to show and count.

    Attributes:
        a, b: the Platt parameters.
        threshold: the lowest confidence whose detections reach ``precision_target`` on the fitting data.
        precision_target: the precision the threshold was chosen for.
        fitted_on: what it was fitted on (data sets, weights), for people.
        num_detections: detections in the fit; ``num_correct`` of them correct.
        colour_rescore: the ``InferenceConfig.colour_rescore`` of the scores it was fitted on (0: raw OS2D scores);
            the detector applies it only to scores of the same kind.
        verify_rescore: the ``InferenceConfig.verify_rescore`` of those scores (0: no second look), likewise.
        verify_rivals: the ``InferenceConfig.verify_rivals`` of those scores (0 without a second look), likewise.
        verify_colour, verify_colour_margin: the ``InferenceConfig`` fields of those names (colour in the rivals; 0 and
            0 without rivals), likewise.
        verify_chroma: the ``InferenceConfig.verify_chroma`` of those scores (the second look's chromatic colour
            factor; 0 without a second look), likewise.
    """

    a: float
    b: float
    threshold: float
    precision_target: float = 0.9
    fitted_on: str = ""
    num_detections: int = 0
    num_correct: int = 0
    colour_rescore: float = 0.0
    verify_rescore: float = 0.0
    verify_rivals: float = 0.0
    verify_colour: float = 0.0
    verify_colour_margin: float = 0.0
    verify_chroma: float = 0.0

    def __post_init__(self) -> None:  # the rivals and the chroma act only within the second look, colour with rivals
        kind = score_kind(0.0, *(getattr(self, k) for k in SCORE_FIELDS[1:]))
        for name, value in zip(SCORE_FIELDS[2:], kind[2:], strict=True):
            object.__setattr__(self, name, value)

    def __call__(self, scores: Tensor) -> Tensor:
        """Confidence in [0, 1] of raw scores (any shape)."""
        return torch.sigmoid(self.a * scores.float() + self.b)

    @property
    def threshold_score(self) -> float:
        """The raw score of the default threshold: a detection counts when its score is at least this."""
        return self.score_at(self.threshold)

    def score_at(self, confidence: float) -> float:
        """The raw score whose confidence is ``confidence`` (the inverse map; ``a`` > 0)."""
        c = min(max(confidence, 1e-6), 1 - 1e-6)
        return (math.log(c / (1 - c)) - self.b) / self.a

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CALIBRATION_KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "calibration") -> Calibration:
        """Inverse of :meth:`to_dict`, checked (:class:`CalibrationError` in one line)."""
        if not isinstance(d, dict) or d.get("kind") != CALIBRATION_KIND:
            raise CalibrationError(f"{source}: not a '{CALIBRATION_KIND}' calibration")
        try:
            out = cls(a=float(d["a"]), b=float(d["b"]), threshold=float(d["threshold"]),
                      precision_target=float(d.get("precision_target", 0.9)), fitted_on=str(d.get("fitted_on", "")),
                      num_detections=int(d.get("num_detections", 0)), num_correct=int(d.get("num_correct", 0)),
                      **{k: float(d.get(k, 0.0)) for k in SCORE_FIELDS})  # absent: fitted before it existed
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{source}: malformed calibration ({e})") from None
        if not (math.isfinite(out.a) and out.a > 0 and math.isfinite(out.b) and 0 <= out.threshold <= 1):
            raise CalibrationError(f"{source}: calibration needs a > 0, a finite b and a threshold in [0, 1]")
        for name in (k for k in SCORE_FIELDS if k != "verify_colour_margin"):  # the margin: below
            value = getattr(out, name)
            if not (math.isfinite(value) and value >= 0):
                raise CalibrationError(f"{source}: calibration's {name} must be a finite number >= 0")
        if out.verify_colour and not out.verify_colour_margin >= 1:
            raise CalibrationError(f"{source}: calibration's verify_colour_margin must be >= 1")
        return out

    def applies_to(self, colour_rescore: float, verify_rescore: float = 0.0, verify_rivals: float = 0.0,
                   verify_colour: float = 0.0, verify_colour_margin: float = math.inf,
                   verify_chroma: float = 0.0) -> bool:
        """Whether scores made with these ``InferenceConfig`` re-scoring fields are the kind it was fitted on (the
        rivals and the chroma count only with a second look, the rivals' colour only with rivals)."""
        mine = tuple(getattr(self, k) for k in SCORE_FIELDS)
        theirs = score_kind(colour_rescore, verify_rescore, verify_rivals, verify_colour, verify_colour_margin,
                            verify_chroma)
        return all(math.isclose(a, b, rel_tol=0, abs_tol=1e-9) for a, b in zip(mine, theirs, strict=True))

    @property
    def score_kind(self) -> str:
        """The re-scoring of the scores it was fitted on, for people (e.g. "raw", "verify 2")."""
        return score_kind_name(*(getattr(self, k) for k in SCORE_FIELDS))


def label_detections(detections: Sequence[Any], ground_truth: Sequence[Any], iou: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Scores and correctness of every detection (VOC matching per image and class, best score first: a
    detection is correct when it takes a not yet taken object of its class with IoU >= ``iou``; one on a difficult
    object is left out). ``ground_truth``: objects with ``boxes_xyxy``, ``labels``, optional ``difficult``."""
    scores: list[float] = []
    hits: list[bool] = []
    for det, gt in zip(detections, ground_truth, strict=True):
        boxes = torch.as_tensor(np.asarray(gt.boxes_xyxy, dtype=np.float32)).reshape(-1, 4)
        labels = np.asarray(gt.labels).reshape(-1)
        difficult = (np.zeros(len(labels), bool) if getattr(gt, "difficult", None) is None
                     else np.asarray(gt.difficult, bool).reshape(-1))
        d_scores = torch.as_tensor(det.scores).float().reshape(-1)
        if not len(d_scores):
            continue
        d_boxes = torch.as_tensor(det.boxes_xyxy).float().reshape(-1, 4)
        d_labels = np.asarray(torch.as_tensor(det.labels)).reshape(-1)
        ious = box_iou(d_boxes, boxes).numpy() if len(boxes) else np.zeros((len(d_scores), 0))
        taken = np.zeros(len(labels), bool)
        for i in torch.argsort(d_scores, descending=True, stable=True).tolist():
            same = (labels == d_labels[i]) & (ious[i] >= iou)
            free = same & (~taken | difficult)
            if free.any():
                j = int(np.argmax(np.where(free, ious[i], -1)))
                if difficult[j]:
                    continue
                taken[j] = True
                hits.append(True)
            else:
                hits.append(False)
            scores.append(float(d_scores[i]))
    return np.asarray(scores, np.float64), np.asarray(hits, bool)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow (second-look scores of bad matches reach -1e3 and below)."""
    return np.exp(-np.logaddexp(0.0, -z))


def fit_platt(scores: np.ndarray, hits: np.ndarray, *, steps: int = 100) -> tuple[float, float]:
    """(a, b) of ``P(correct) = sigmoid(a * score + b)`` by Newton's method on the log loss (Platt's smoothed
    targets keep it finite when the classes separate). The scores are clipped to [-1, 1], the range of the raw
    cosine scores: the second look divides a negative score by its factor, which can leave a few far below -1
    (their confidence is ~0 either way, and they would dominate the fit). Then they are standardised and every step
    is halved until the loss goes down, so it converges whatever their spread (re-scored ones can be all near 0)."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), -1.0, 1.0)
    n_pos, n_neg = int(hits.sum()), int((~hits).sum())
    if n_pos == 0 or n_neg == 0:
        raise CalibrationError(f"cannot calibrate: {n_pos} correct and {n_neg} wrong detections (need both)")
    y = np.where(hits, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    mu, sigma = float(np.mean(scores)), float(np.std(scores)) or 1.0
    x = np.stack([(scores - mu) / sigma, np.ones_like(scores)], axis=1)

    def loss(w: np.ndarray) -> float:
        z = x @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z))

    w = np.zeros(2)
    current = loss(w)
    for _ in range(steps):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:
            t /= 2
        w, previous, current = w - t * step, current, loss(w - t * step)
        if np.abs(t * step).max() < 1e-10 or previous - current < 1e-12 * max(1.0, abs(current)):
            break
    return float(w[0] / sigma), float(w[1] - w[0] * mu / sigma)


def precision_threshold(confidence: np.ndarray, hits: np.ndarray, target: float = 0.9) -> float:
    """The lowest confidence ``t`` such that the detections with confidence >= ``t`` have precision >= ``target``
    (1.0 when no threshold reaches it)."""
    order = np.argsort(-confidence, kind="stable")
    precision = np.cumsum(hits[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(precision >= target)[0]
    if not len(ok):
        return 1.0
    return float(confidence[order][ok[-1]])


def best_f1_threshold(scores: np.ndarray, hits: np.ndarray, num_positives: int) -> float:
    """The score at which the detections kept (score >= it) have the best F1 against ``num_positives`` objects
    (``scores``/``hits`` as from :func:`label_detections`; inf when nothing is correct)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    f1 = 2 * tp / (np.arange(1, len(order) + 1) + num_positives)
    if not len(order) or not tp[-1]:
        return float("inf")
    return float(scores[order][int(np.argmax(f1))])


def reliability(confidence: np.ndarray, hits: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width confidence bin: ``lo``, ``hi``, ``count``, ``confidence`` (mean), ``accuracy``."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for k in range(bins):
        m = idx == k
        out.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": int(m.sum()),
                    "confidence": float(confidence[m].mean()) if m.any() else float("nan"),
                    "accuracy": float(hits[m].mean()) if m.any() else float("nan")})
    return out


def expected_calibration_error(confidence: np.ndarray, hits: np.ndarray, bins: int = 10) -> float:
    """Sum over bins of (share of detections) x |accuracy - mean confidence|."""
    n = max(1, len(confidence))
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability(confidence, hits, bins) if b["count"]))


SCORE_FIELDS = ("colour_rescore", "verify_rescore", "verify_rivals", "verify_colour", "verify_colour_margin",
                "verify_chroma")
ScoreKind = tuple[float, float, float, float, float, float]  # the SCORE_FIELDS' values


def config_score_kind(config: Any) -> ScoreKind:
    """:func:`score_kind` of an ``InferenceConfig`` (its :data:`SCORE_FIELDS`)."""
    return score_kind(*(getattr(config, k) for k in SCORE_FIELDS))


def score_kind(colour_rescore: float, verify_rescore: float, verify_rivals: float = 0.0, verify_colour: float = 0.0,
               verify_colour_margin: float = math.inf, verify_chroma: float = 0.0) -> ScoreKind:
    """The kind of scores that ``InferenceConfig``'s re-scoring settings make: ``(colour_rescore, verify_rescore,
    verify_rivals, verify_colour, verify_colour_margin, verify_chroma)`` as floats; the rivals and the chroma 0
    without a second look (they act only within it), the rivals' colour 0 without rivals and its margin 0 without
    colour."""
    rivals = float(verify_rivals) if verify_rescore else 0.0
    colour = float(verify_colour) if rivals else 0.0
    chroma = float(verify_chroma) if verify_rescore else 0.0
    return (float(colour_rescore), float(verify_rescore), rivals, colour,
            float(verify_colour_margin) if colour else 0.0, chroma)


def score_kind_name(colour_rescore: float, verify_rescore: float, verify_rivals: float = 0.0,
                    verify_colour: float = 0.0, verify_colour_margin: float = math.inf,
                    verify_chroma: float = 0.0) -> str:
    """"raw", or the re-scorings that made the scores ("colour 0.5", "verify 2", "colour 0.5 + verify 2",
    "verify 2 + rivals 4", "verify 2 + rivals 8 + rival colour 1 (margin 1.1) + chroma 0.5"; the rivals and the
    chroma count only with a second look, the rivals' colour only with rivals)."""
    kind = score_kind(colour_rescore, verify_rescore, verify_rivals, verify_colour, verify_colour_margin,
                      verify_chroma)
    parts = [f"{n} {g:g}" for n, g in zip(("colour", "verify", "rivals", "rival colour"), kind[:4], strict=True) if g]
    if kind[3]:
        parts[-1] += f" (margin {kind[4]:g})"
    if kind[5]:
        parts.append(f"chroma {kind[5]:g}")
    return " + ".join(parts) or "raw"


def fit_calibration(scores: np.ndarray, hits: np.ndarray, *, precision_target: float = 0.9,
                    fitted_on: str = "", colour_rescore: float = 0.0, verify_rescore: float = 0.0,
                    verify_rivals: float = 0.0, verify_colour: float = 0.0,
                    verify_colour_margin: float = math.inf, verify_chroma: float = 0.0) -> Calibration:
    """Platt scaling of ``scores`` to ``hits`` and the threshold of ``precision_target`` on them; ``colour_rescore``,
    ``verify_rescore``, ``verify_rivals``, ``verify_colour``, ``verify_colour_margin`` and ``verify_chroma``: the kind
    of the scores (those fields of the detections' ``InferenceConfig``)."""
    a, b = fit_platt(scores, hits)
    if a <= 0:
        raise CalibrationError(f"cannot calibrate: higher scores are not more often correct here (slope {a:.3g})")
    confidence = _sigmoid(a * scores + b)
    return Calibration(a=a, b=b, threshold=round(precision_threshold(confidence, hits, precision_target), 4),
                       precision_target=precision_target, fitted_on=fitted_on, num_detections=len(scores),
                       num_correct=int(hits.sum()), colour_rescore=float(colour_rescore),
                       verify_rescore=float(verify_rescore), verify_rivals=float(verify_rivals),
                       verify_colour=float(verify_colour), verify_colour_margin=float(verify_colour_margin),
                       verify_chroma=float(verify_chroma))


__all__ = ["SCORE_FIELDS", "Calibration", "ScoreKind", "CalibrationError", "config_score_kind", "best_f1_threshold", "expected_calibration_error", "fit_calibration", "fit_platt",
           "label_detections", "precision_threshold", "reliability", "score_kind", "score_kind_name"]
