"""Issue 14's time bar against the single-scale default of the day the issue was filed, on the same machine.

The bar: seconds per image at default settings at most 2x "today's single-scale time on the same machine". Two
readings, both measured here in one run: against the single-scale default *as it was when the issue was filed*
(commit ``--issue-day``, 035057c: ``image_size`` 1024, float32 heads, the system allocator), and against the
single-scale setting of this tree (``single-1024``: image size 1024, raw scores, float32 heads), which the speed
work since then made faster too, so the second reading is the stricter one.

Each arm runs in its own process (a code version per process: ``PYTHONPATH`` points at a git worktree of that
commit, made under ``--worktrees`` when missing) that loads the default weights of its version, registers the
set's classes and answers "detect this photo" requests; the driver sends every photo to every arm in turn (the
order rotated per photo, one arm at a time, after a warm-up photo) and times ``Detector.detect`` inside the arm.
Only that API (``from_weights``, ``add_class``, ``detect``), which every version has, is used. mAP@0.5 and
recall on the same photos come with each arm (a sanity check, not a decision).

    python benchmarks/time_bar.py --set fl27-val --every 10
    python benchmarks/time_bar.py --set fl27-val --every 10 --also 0858205   # plus the default at another commit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISSUE_DAY = "035057c"  # main when issue 14 was filed: single scale at 1024 was the default


def worker() -> None:
    """One arm: JSON requests on stdin, answers on stdout (``os2d`` is whatever PYTHONPATH gives)."""
    if os.environ.get("TIME_BAR_TUNE") == "1":  # this tree's command line tunes the allocator before torch
        from os2d.runtime import tune_allocator

        tune_allocator()
    from PIL import Image

    from os2d.detector import Detector

    det = Detector.from_weights("default", **json.loads(os.environ.get("TIME_BAR_CONFIG", "{}")))
    out, sys.stdout = sys.stdout, sys.stderr  # nothing but answers on the pipe
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "class":
            det.add_class(msg["name"], [Image.open(p).convert("RGB") for p in msg["paths"]])
            answer: dict = {}
        else:
            image = Image.open(msg["path"]).convert("RGB")
            image.load()
            t0 = time.perf_counter()
            d = det.detect(image)
            answer = {"s": time.perf_counter() - t0, "boxes": d.boxes_xyxy.tolist(), "scores": d.scores.tolist(),
                      "labels": d.labels.tolist()}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def worktree(rev: str, root: Path) -> Path:
    """``src`` of a detached git worktree of ``rev`` under ``root`` (made once)."""
    path = root / rev
    if not (path / "src" / "os2d").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                       capture_output=True)
    return path / "src"


class Arm:
    """A worker process of one code version and settings."""

    def __init__(self, src: Path, tune: bool, config: dict) -> None:
        env = dict(os.environ, PYTHONPATH=str(src), TIME_BAR_TUNE="1" if tune else "0",
                   TIME_BAR_CONFIG=json.dumps(config))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)

    def ask(self, **msg) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"an arm's worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--set", default="fl27-val", help="fl27-val | fl27-train | demo | synth-val")
    ap.add_argument("--every", type=int, default=10, help="every Nth image of the set")
    ap.add_argument("--issue-day", default=ISSUE_DAY, help="the commit whose single-scale default is the baseline")
    ap.add_argument("--also", nargs="*", default=[], help="also the default of these commits")
    ap.add_argument("--worktrees", type=Path, default=Path.home() / "os2d-runs" / "worktrees")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    if args.worker:
        worker()
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cascade_probe import load_set

    from os2d.evaluation.metrics import evaluate_detections
    from os2d.results import Detections

    specs = {f"issue-day single-scale ({args.issue_day} defaults)": (worktree(args.issue_day, args.worktrees), False,
                                                                      {}),
             "single-1024 (this tree: raw scores, fp32 heads)": (ROOT / "src", True,
                                                                 {"image_size": 1024, "verify_rescore": 0.0,
                                                                  "heads_precision": "fp32"}),
             "default (this tree)": (ROOT / "src", True, {})}
    specs |= {f"default at {rev}": (worktree(rev, args.worktrees), True, {}) for rev in args.also}
    dataset = load_set(args.set, args.synth_dir)
    names = [c.name for c in dataset.classes]
    arms = {name: Arm(*spec) for name, spec in specs.items()}
    try:
        for arm in arms.values():
            for c in dataset.classes:
                arm.ask(cmd="class", name=c.name, paths=[str(p) for p in c.image_paths])
        images = dataset.images[:: args.every]
        for arm in arms.values():
            arm.ask(cmd="detect", path=str(images[0].path))  # warm-up
        seconds: dict[str, list[float]] = {a: [] for a in arms}
        dets: dict[str, list[Detections]] = {a: [] for a in arms}
        order = list(arms)
        for i, rec in enumerate(images):
            for a in order[i % len(order):] + order[: i % len(order)]:
                r = arms[a].ask(cmd="detect", path=str(rec.path))
                seconds[a].append(r["s"])
                dets[a].append(Detections(_t(r["boxes"], (-1, 4)), _t(r["scores"]), _t(r["labels"], long=True),
                                          _t([], (0, 4, 2)), names))
    finally:
        for arm in arms.values():
            arm.close()
    base, single = (sum(seconds[a]) / len(images) for a in order[:2])
    print(f"{args.set}, every {args.every}th image ({len(images)}), one process per arm, arms in turn (rotated)")
    print("| arm | s / image | vs issue-day single-scale | vs single-1024 (this tree) | mAP@0.5 | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for a in order:
        s = sum(seconds[a]) / len(images)
        r = evaluate_detections(dets[a], images, len(names), 0.5, False, class_names=names)
        print(f"| {a} | {s:.3f} | {s / base:.2f}x | {s / single:.2f}x | {100 * r.map:.1f} | {100 * r.recall:.1f} |")


def _t(values: list, shape: tuple[int, ...] | None = None, long: bool = False):
    import torch

    t = torch.tensor(values, dtype=torch.long if long else torch.float32)
    return t.reshape(shape) if shape is not None else t


if __name__ == "__main__":
    main()
