"""A separate box head: a second TransformNet, trained with the localisation loss, read where the default detects.

Issue 14 asks for tighter boxes. The localisation stage (``recipes/loc_stage``, round 1: the box loss at weight 0.2,
only the TransformNet trained, the backbone exactly stage 3's) tightened the boxes on the logos (mAP@0.7 +9.2) but
lost recognition (mAP@0.5 -4.3). Here that TransformNet is used *only for boxes*: the shipped default finds and scores
the detections, and the box TransformNet is evaluated at the same level, location and class view
(:func:`os2d.model.head_windows.head_windows` with 1 x 1 windows, the same backbone features and class kernels), so its
box replaces or competes with the default's. An experiment harness: it patches the inference functions it needs
(``decode.detections_at``, ``detect._merged``, ``verify.reshape_candidates`` and the detector's second look), so
the library stays untouched.

Arms (default settings otherwise: automatic scale, second look with rivals, shape search):
    control             the shipped default
    pre / pre-gate      the reported candidates' boxes and parallelograms replaced right after NMS, so the second
                        look crops the new parallelograms; "-gate": only where the new box overlaps the default's
                        with IoU >= 0.5 (large objects that fill the photo otherwise shrink to a part of them)
    post / post-gate    the same on the final detections only (the scores are exactly the default's; detections the
                        shape search moved keep its shape)
    *-noshape           the same with the shape search off (``reshape_top`` 0)
    shape-cand          the box head's parallelogram is one more shape-search candidate of each of the K = 10 best
                        detections: it replaces the detection's shape only if its crop agrees with the class better
                        (the second look arbitrates); scores are the default's

Every image runs every arm in turn (the order rotated) after one warm-up image (``default_arms.run_arms``). The box
TransformNet comes from ``recipes/loc_stage/run.sh`` (its round 1 ``final.pt``).

    python benchmarks/box_head.py --sets fl27-train synth-val --arms control pre-gate post-gate pre-gate-noshape \
        post-gate-noshape shape-cand --box-net runs/loc-stage/run/final.pt
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import os2d.detector as detector_module  # noqa: E402
import os2d.inference.decode as decode  # noqa: E402
import os2d.inference.detect as detect  # noqa: E402
import os2d.inference.exact_values as exact_values  # noqa: E402
import os2d.inference.verify as verify  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.model.head_windows import head_windows  # noqa: E402
from os2d.model.transform_net import TransformNet  # noqa: E402
from os2d.ops.boxes import box_iou  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_arms import SYNTH_DIR, print_table, run_arms, table_rows  # noqa: E402

GATE_IOU = 0.5  # "-gate" arms: the box head's box is taken only where it overlaps the default's this much


@dataclass(frozen=True)
class Arm:
    box_head: bool
    mode: str = "pre"  # "pre": before the second look; "post": on the final detections; "cand": shape-search candidate
    gate: float = 0.0
    changes: tuple[tuple[str, object], ...] = ()


NO_SHAPE = (("reshape_top", 0),)
ARMS = {
    "control": Arm(False),
    "pre": Arm(True, "pre"),
    "pre-gate": Arm(True, "pre", GATE_IOU),
    "pre-gate-noshape": Arm(True, "pre", GATE_IOU, NO_SHAPE),
    "post": Arm(True, "post"),
    "post-gate": Arm(True, "post", GATE_IOU),
    "post-gate-noshape": Arm(True, "post", GATE_IOU, NO_SHAPE),
    "shape-cand": Arm(True, "cand"),
}


class BoxHeadPatch:
    """Holds the box TransformNet and the arm, and patches the inference functions while an arm runs."""

    def __init__(self, net: TransformNet) -> None:
        self.net, self.arm = net, ARMS["control"]
        self.model = self.kernels = None
        self.original_size: tuple[int, int] = (0, 0)
        self.scale = torch.ones(2)
        self.final: dict[bytes, tuple[Tensor, Tensor]] = {}  # "post": default corners -> box head (box, corners)
        self.origin: dict[bytes, tuple[object, int]] = {}  # "cand": default corners -> (level candidates, index)
        self._at, self._merged = decode.detections_at, detect._merged
        self._verify, self._candidates = detector_module.verify_detections, verify.reshape_candidates
        decode.detections_at = exact_values.detections_at = self.detections_at
        detect._merged = self.merged
        detector_module.verify_detections = self.verify_detections
        verify.reshape_candidates = self.reshape_candidates

    def box_at(self, c, loc: Tensor) -> tuple[Tensor, Tensor]:
        """(n, 4) boxes and (n, 4, 2) corners (original pixels) of the box TransformNet at candidates ``loc`` of
        the level candidates ``c``."""
        cfg = self.model.config
        w = c.features.shape[-1]
        ys, xs = c.anchors[loc] // w, c.anchors[loc] % w
        with torch.no_grad():
            out = head_windows(c.features, self.kernels, self.net, c.views[loc], ys, xs, (1, 1),
                               invert_transform=cfg.invert_transform, grid_size=cfg.class_grid_size,
                               pool_border=cfg.pool_border, stride=float(self.model.stride),
                               anchor_size=cfg.anchor_size)
        boxes, _ = decode.clip_boxes(out.boxes_xyxy.reshape(-1, 4), out.scores.reshape(-1), c.level_size,
                                     SimpleNamespace(score_threshold=None))
        boxes, corners = decode.to_original(boxes, out.corners_xy.reshape(-1, 4, 2), c.level_size, self.original_size)
        return boxes.float(), corners.float()

    def merged(self, model, cands, kernels, *args, **kwargs):
        self.model, self.kernels = model, kernels
        return self._merged(model, cands, kernels, *args, **kwargs)

    def detections_at(self, cands, keep, view_class, class_names, original_size):
        dets = self._at(cands, keep, view_class, class_names, original_size)
        self.original_size, self.final, self.origin = original_size, {}, {}
        if not self.arm.box_head or keep is None or len(dets) == 0:
            return dets
        boxes, corners = dets.boxes_xyxy.clone(), dets.corners_xy.clone()
        start = 0
        for c in cands:
            end = start + c.scores.numel()
            pos = ((keep >= start) & (keep < end)).nonzero().squeeze(1)  # positions in dets
            start_c, start = start, end
            if pos.numel() == 0:
                continue
            if self.arm.mode == "cand":  # computed later, only for the shape search's few
                self.origin.update({dets.corners_xy[p].numpy().tobytes(): (c, int(keep[p]) - start_c)
                                    for p in pos.tolist()})
                continue
            new_boxes, new_corners = self.box_at(c, keep[pos] - start_c)
            take = torch.ones(len(pos), dtype=torch.bool)
            if self.arm.gate > 0:
                take = box_iou(new_boxes, boxes[pos]).diagonal() >= self.arm.gate
            boxes[pos[take]], corners[pos[take]] = new_boxes[take], new_corners[take]
        if self.arm.mode == "post":
            self.final = {dets.corners_xy[i].numpy().tobytes(): (boxes[i], corners[i]) for i in range(len(dets))}
        elif self.arm.mode == "pre":
            dets.boxes_xyxy, dets.corners_xy = boxes, corners
        return dets

    def verify_detections(self, model, dets, image, *args, **kwargs):
        width, height = dets.image_size
        self.scale = torch.tensor([image.shape[-1] / width, image.shape[-2] / height])
        out = self._verify(model, dets, image, *args, **kwargs)
        if self.arm.mode != "post" or not self.final or len(out) == 0:
            return out
        boxes, corners = out.boxes_xyxy.clone(), out.corners_xy.clone()
        for i in range(len(out)):  # the shape search's moved detections are not found: they keep its shape
            hit = self.final.get(out.corners_xy[i].float().numpy().tobytes())
            if hit is not None:
                boxes[i], corners[i] = hit
        out.boxes_xyxy, out.corners_xy = boxes, corners
        return out

    def reshape_candidates(self, corners: Tensor, class_aspect: Tensor) -> tuple[Tensor, Tensor]:
        cands, owner = self._candidates(corners, class_aspect)
        if self.arm.mode != "cand" or not self.origin:
            return cands, owner
        keys = torch.stack([torch.frombuffer(bytearray(k), dtype=torch.float32).view(4, 2) for k in self.origin])
        origins = list(self.origin.values())
        extra, extra_owner = [], []
        for i, own in enumerate(corners / self.scale):  # back to original pixels: match the detection
            dist = (keys - own).abs().flatten(1).amax(1)
            j = int(dist.argmin())
            if float(dist[j]) >= 1e-2:
                continue
            c, loc = origins[j]
            _, new = self.box_at(c, torch.tensor([loc]))
            if not torch.allclose(new[0], own, atol=0.5):
                extra.append(new[0] * self.scale)
                extra_owner.append(i)
        if not extra:
            return cands, owner
        return (torch.cat([cands, torch.stack(extra).to(cands.dtype)]),
                torch.cat([owner, torch.tensor(extra_owner, dtype=owner.dtype)]))


def load_box_net(path: str | Path, like: TransformNet) -> TransformNet:
    """The TransformNet of an os2d checkpoint, shaped like ``like``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = {k.removeprefix("transform_net."): v.float() for k, v in ckpt["model"].items()
             if k.startswith("transform_net.")}
    net = TransformNet(like.linear.out_channels, like.conv[0].in_channels, frozen_bn=True)
    net.load_state_dict(state)
    return net.eval()


def run_set(set_name: str, arms: list[str], args: argparse.Namespace) -> list[str]:
    """Table rows of one set (:func:`default_arms.table_rows`), the box head patched in for the arms that use it."""
    det = Detector.from_weights(args.weights)
    patch = BoxHeadPatch(load_box_net(args.box_net, det.model.transform_net))

    def use(arm: str) -> None:
        patch.arm = ARMS[arm]

    runs = run_arms(set_name, {a: dict(ARMS[a].changes) for a in arms}, every=args.every, synth_dir=args.synth_dir,
                    detector=det, before=use)
    return table_rows(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["fl27-train", "synth-val"])
    ap.add_argument("--arms", nargs="+", default=["control", "shape-cand"], choices=sorted(ARMS))
    ap.add_argument("--box-net", type=Path, default=Path("runs/loc-stage/run/final.pt"),
                    help="an os2d checkpoint whose TransformNet is the box head (recipes/loc_stage, round 1)")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--synth-dir", type=Path, default=SYNTH_DIR)
    args = ap.parse_args()
    if not args.box_net.exists():
        raise SystemExit(f"{args.box_net}: no such checkpoint (make it with: bash recipes/loc_stage/run.sh)")
    rows = [row for s in args.sets for row in run_set(s, args.arms, args)]
    print_table(f"box head ({args.box_net}), default settings", rows)


if __name__ == "__main__":
    main()
