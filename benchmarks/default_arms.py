"""The whole default pipeline under a few ``InferenceConfig`` changes, compared on the same photos.

Each arm is a name and a JSON object of ``InferenceConfig`` field changes (``{}``: the default); its key ``"model"``,
if any, holds ``ModelConfig`` changes made to the loaded model for that arm's detections only (inference-time
switches such as ``anchor_aspect_power``), and its key ``"weights"`` weights of the arm's own (a name or file, in
place of ``--weights``; not together with ``"model"``). Per set, every image
runs every arm in turn (``round_robin.run_round_robin``: the order rotated image by image, so slow phases of the machine
hit every arm alike) through ``Detector.detect`` after one warm-up image per arm. The table gives mAP and recall at
IoU 0.5, mAP at IoU 0.7, each with its change against the first arm, and seconds per image with the ratio to the
first arm. ``box_head.py`` and ``probe_aspect.py`` use :func:`run_arms` and the table too.

    python benchmarks/default_arms.py --sets fl27-train synth-val \
        --arm default '{}' --arm rivals-2 '{"verify_rivals": 2}' --arm no-shape-search '{"reshape_top": 0}'
    python benchmarks/default_arms.py --sets unseen --arm default '{}' --arm anchors '{"model": {"anchor_aspect_power": 1}}'
    python benchmarks/default_arms.py --sets unseen --arm default '{}' --arm lite2 '{"weights": "lite2.pt"}'
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402

from os2d.config import InferenceConfig, ModelConfig  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.evaluation.metrics import evaluate_detections  # noqa: E402
from os2d.results import Detections  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heads_precision import top_agreement  # noqa: E402
from round_robin import run_round_robin  # noqa: E402

SYNTH_DIR = Path.home() / "os2d-runs" / "synth-grocery-eval"


@dataclass
class ArmRuns:
    """Every arm's detections of one set's images and its seconds per image
    (:func:`round_robin.run_round_robin`)."""

    set_name: str
    class_names: list[str]
    images: list
    seconds: dict[str, float]  # per image
    detections: dict[str, list[Detections]]

    def metrics(self, arm: str) -> tuple[float, float, float]:
        """(mAP@0.5, recall@0.5, mAP@0.7) in percent."""
        r5, r7 = (evaluate_detections(self.detections[arm], self.images, len(self.class_names), iou, False,
                                      class_names=self.class_names) for iou in (0.5, 0.7))
        return 100 * r5.map, 100 * r5.recall, 100 * r7.map


def run_arms(set_name: str, arms: dict[str, dict], **kwargs) -> ArmRuns:
    """:func:`round_robin.run_round_robin` (its keyword arguments; ``synth_dir`` defaults to ``SYNTH_DIR``). An arm's
    ``"model"`` changes (``ModelConfig`` fields) are set on the detector's model before each of its detections."""
    kwargs.setdefault("synth_dir", SYNTH_DIR)
    own = {a: c["weights"] for a, c in arms.items() if "weights" in c}
    if own:
        kwargs["arm_weights"] = own
    model_changes = {a: c.get("model", {}) for a, c in arms.items()}
    if any(model_changes.values()):
        weights = kwargs.pop("weights", "default")
        det = kwargs.get("detector") or Detector.from_weights(weights)
        kwargs["detector"] = det
        base = det.model.config

        def before(arm: str) -> None:
            det.model.config = replace(base, **model_changes[arm])

        kwargs["before"] = before
    arms = {a: {k: v for k, v in c.items() if k not in ("model", "weights")} for a, c in arms.items()}
    return ArmRuns(set_name, *run_round_robin(set_name, arms, **kwargs))


TABLE_HEADER = ("| set | images | arm | mAP@0.5 (d) | recall@0.5 (d) | mAP@0.7 (d) | s / image | time ratio "
                "| same top-10 set / order |",
                "|---|---:|---|---:|---:|---:|---:|---:|---:|")


def table_rows(runs: ArmRuns) -> list[str]:
    """One row per arm (columns of ``TABLE_HEADER``): the metrics and time, with the changes against the first arm,
    and the share of images whose top-10 detections are the first arm's (``heads_precision.top_agreement``)."""
    rows, first = [], None
    base = next(iter(runs.detections.values()))
    for a, dets in runs.detections.items():
        m5, rc, m7 = runs.metrics(a)
        s = runs.seconds[a]
        first = first or (m5, rc, m7, s)
        agree = [top_agreement(x, y) for x, y in zip(base, dets, strict=True)]
        same_set, same_order = (100 * sum(t[i] for t in agree) / max(len(agree), 1) for i in (0, 1))
        rows.append(f"| {runs.set_name} | {len(runs.images)} | {a} | {m5:.2f} ({m5 - first[0]:+.2f}) | {rc:.1f} "
                    f"({rc - first[1]:+.1f}) | {m7:.2f} ({m7 - first[2]:+.2f}) | {s:.3f} | {s / first[3]:.3f}x "
                    f"| {same_set:.1f}% / {same_order:.1f}% |")
        print(rows[-1], flush=True)
    return rows


def print_table(title: str, rows: list[str]) -> None:
    print(f"\n{title}, {torch.get_num_threads()} threads")
    print("\n".join(TABLE_HEADER))
    print("\n".join(rows))


def parse_arm(name: str, text: str) -> tuple[str, dict]:
    changes = json.loads(text)
    if not isinstance(changes, dict):
        raise SystemExit(f"arm {name}: {text!r} is not a JSON object")
    InferenceConfig().replace(**{k: v for k, v in changes.items() if k not in ("model", "weights")})  # invalid fields fail
    ModelConfig(**changes.get("model", {}))
    if "weights" in changes and "model" in changes:
        raise SystemExit(f"arm {name}: \"weights\" and \"model\" exclude each other")
    return name, changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["fl27-train", "synth-val"])
    ap.add_argument("--arm", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                    help="an arm: its name and InferenceConfig changes as JSON; the first is the baseline")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=SYNTH_DIR)
    args = ap.parse_args()
    arms = dict(parse_arm(n, t) for n, t in args.arm)
    rows = [row for s in args.sets
            for row in table_rows(run_arms(s, arms, weights=args.weights, every=args.every,
                                            max_images=args.max_images, synth_dir=args.synth_dir))]
    print_table(f"default pipeline, arms {json.dumps(arms)}", rows)


if __name__ == "__main__":
    main()
