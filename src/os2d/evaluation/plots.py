"""Precision/recall plots of a :class:`~os2d.evaluation.harness.DatasetEvaluation` (matplotlib, Agg canvas).

One PNG per class (``<index>_<name>.png``) and ``overall.png`` with every class and the joint-classes curve.
Figures are drawn on an explicit Agg canvas: no global backend is switched, no window opens.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from os2d.evaluation.metrics import PRCurve

MAX_LEGEND_CLASSES = 20  # above this, the overall plot draws classes as unlabeled grey lines


def _require_matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"PR plots need matplotlib: pip install 'os2d[train]' ({exc})") from exc
    return Figure, FigureCanvasAgg


def safe_filename(name: str, max_len: int = 60) -> str:
    """A file-name-safe version of a class name (letters, digits, ``.``, ``_``, ``-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
    return s[:max_len]


def _step_curve(curve: PRCurve) -> tuple[np.ndarray, np.ndarray]:
    """Recall and interpolated precision (monotone from the right), starting at recall 0 - what AP integrates."""
    rec = np.nan_to_num(np.asarray(curve.recall, np.float64))
    prec = np.asarray(curve.precision, np.float64)
    if rec.size == 0:
        return np.zeros(1), np.zeros(1)
    interp = np.maximum.accumulate(prec[::-1])[::-1]
    return np.concatenate(([0.0], rec)), np.concatenate(([interp[0]], interp))


def _axes(fig: Any, title: str) -> Any:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    return ax


def _ap_text(ap: float) -> str:
    return "n/a" if ap is None or math.isnan(ap) else f"{100 * ap:.1f}"


def plot_pr_curves(evaluation: Any, out_dir: str | Path, *, title: str | None = None) -> list[Path]:
    """Write per-class and overall precision/recall PNGs; returns the written paths (overall last).

    Args:
        evaluation: a :class:`~os2d.evaluation.harness.DatasetEvaluation`.
        out_dir: created if missing.
        title: prefix of the plot titles (default: method and dataset name).
    """
    figure_cls, canvas_cls = _require_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = evaluation.result
    names = evaluation.class_names or [str(i) for i in range(len(res.ap_per_class))]
    prefix = title or f"{evaluation.method} on {evaluation.dataset.get('name', 'dataset')}"
    iou = f"{res.iou_threshold:.2f}"
    paths: list[Path] = []

    def save(fig: Any, path: Path) -> None:
        canvas_cls(fig)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        paths.append(path)

    for c, (name, curve) in enumerate(zip(names, res.precision_recall, strict=True)):
        fig = figure_cls(figsize=(4.5, 4.0))
        ap = float(res.ap_per_class[c])
        ax = _axes(fig, f"{prefix}\n{name}: AP@{iou} {_ap_text(ap)} ({int(res.num_gt_per_class[c])} GT)")
        if not math.isnan(ap):
            r, p = _step_curve(curve)
            ax.plot(r, p, drawstyle="steps-post", color="C0")
            ax.fill_between(r, p, step="post", alpha=0.15, color="C0")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
        save(fig, out / f"{c:03d}_{safe_filename(name)}.png")

    fig = figure_cls(figsize=(6.5, 5.0))
    many = len(names) > MAX_LEGEND_CLASSES
    ax = _axes(fig, f"{prefix}\nmAP@{iou} {_ap_text(res.map)}, joint AP {_ap_text(res.ap_joint_classes)}")
    for c, (name, curve) in enumerate(zip(names, res.precision_recall, strict=True)):
        if math.isnan(float(res.ap_per_class[c])):
            continue
        r, p = _step_curve(curve)
        if many:  # hundreds of classes: thin grey lines, no legend entries
            ax.plot(r, p, drawstyle="steps-post", lw=0.6, alpha=0.3, color="grey")
        else:
            ax.plot(r, p, drawstyle="steps-post", lw=1, alpha=0.8,
                    label=f"{name} {_ap_text(float(res.ap_per_class[c]))}")
    if evaluation.joint_curve is not None and len(evaluation.joint_curve.recall):
        r, p = _step_curve(evaluation.joint_curve)
        ax.plot(r, p, drawstyle="steps-post", lw=2.5, color="black", label=f"joint {_ap_text(res.ap_joint_classes)}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left", ncol=2 if len(names) > 10 else 1)
    save(fig, out / "overall.png")
    return paths


__all__ = ["plot_pr_curves", "safe_filename"]


def plot_reliability(curves: dict[str, list[dict[str, float]]], path: str | Path, *, title: str) -> Path:
    """A reliability diagram: per confidence bin (:func:`os2d.calibration.reliability`), the share of correct
    detections against the mean confidence, one line per named set, the diagonal for perfect calibration, and the
    detections per bin underneath (log scale)."""
    figure_cls, canvas_cls = _require_matplotlib()
    fig = figure_cls(figsize=(9, 4.2), dpi=110)
    canvas_cls(fig)
    ax, hist = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for name, bins in curves.items():
        used = [b for b in bins if b["count"]]
        line, = ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", linewidth=1.5,
                        markersize=4, label=name)
        hist.plot([(b["lo"] + b["hi"]) / 2 for b in used], [b["count"] for b in used], marker="o", linewidth=1,
                  markersize=3, color=line.get_color(), label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (bin mean)", ylabel="share correct (IoU >= 0.5)",
           title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    hist.set(xlim=(0, 1), yscale="log", xlabel="confidence", ylabel="detections per bin", title="bin counts")
    hist.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
