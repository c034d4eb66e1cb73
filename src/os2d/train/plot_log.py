"""Training curves from ``train_log.jsonl``: one panel per loss term (and lr, gradient norm, speed) plus one
per evaluation metric, several runs overlaid. Drawn with matplotlib's Agg canvas (no display, no global
backend switch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from os2d.train.run_log import read_log

TRAIN_EXTRA = ("lr", "grad_norm", "patches_per_s")
EVAL_METRICS = ("mAP@0.50", "recall@0.50", "AP_joint_classes@0.50", "mAPw@0.50")
SKIP = {"step", "epoch", "time", "skipped", "data_s", "step_s", "kind", "split", "num_gt", "seconds_per_image"}


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def _smooth(ys: list[float], window: int) -> list[float]:
    """Trailing running mean over ``window`` points (1 or less: unchanged)."""
    if window <= 1:
        return ys
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_log(paths: Sequence[str | Path], out: str | Path, *, smooth: int = 20,
             keys: Sequence[str] | None = None) -> Path:
    """Draw the curves of one or more runs into ``out`` (PNG/SVG/PDF by extension).

    Args:
        paths: ``train_log.jsonl`` files, or run directories holding one.
        smooth: running-mean window for the per-iteration curves (raw values are drawn faintly behind).
        keys: training terms to draw (default: every ``loss*`` term + lr, grad_norm, patches_per_s).

    Returns:
        The written file.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is in the train extra
        raise RuntimeError("plotting needs matplotlib: pip install 'os2d[train]'") from e

    runs = []
    for p in paths:
        p = Path(p)
        log = p / "train_log.jsonl" if p.is_dir() else p
        label = log.parent.name if log.name == "train_log.jsonl" else log.stem
        runs.append((label, read_log(log)))
    train_keys: list[str] = list(keys or [])
    eval_keys: list[str] = []
    for _, records in runs:
        for r in records:
            if r.get("kind") == "eval":
                eval_keys += [k for k in EVAL_METRICS if k in r and k not in eval_keys]
            elif keys is None:
                train_keys += [k for k in r if k.startswith("loss") and k not in train_keys]
    if keys is None:
        train_keys += [k for k in TRAIN_EXTRA if any(k in r for _, rec in runs for r in rec)]
    panels = [("train", k) for k in train_keys] + [("eval", k) for k in eval_keys]
    if not panels:
        raise ValueError(f"nothing to plot in {[str(p) for p in paths]}: no loss terms or metrics")

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.2 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for i, (kind, key) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for j, (label, records) in enumerate(runs):
            color = f"C{j}"
            if kind == "train":
                xs, ys = _series([r for r in records if r.get("kind", "train") == "train"], key)
                if not xs:
                    continue
                if smooth > 1:
                    ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, _smooth(ys, smooth), color=color, linewidth=1.5, label=label)
            else:
                evals = [r for r in records if r.get("kind") == "eval"]
                for split, style in (("val", "-o"), ("train", "--s")):
                    xs, ys = _series([r for r in evals if r.get("split", "val") == split], key)
                    if xs:
                        ax.plot(xs, ys, style, color=color, markersize=3, label=f"{label} {split}")
        ax.set_title(key if kind == "train" else f"eval {key}", fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        values = [float(v) for line in ax.get_lines() for v in line.get_ydata()]
        if key == "lr" and values and 0 < min(values) < max(values):
            ax.set_yscale("log")  # steps of a schedule; a constant lr stays linear
        if ax.get_legend_handles_labels()[0] and (len(runs) > 1 or kind == "eval"):
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


__all__ = ["plot_log"]
