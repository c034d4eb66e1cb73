"""Probe: a location cascade for the OS2D heads, measured against the exact heads on real photos (issue 15).

Not in the library: on this model and CPU it is no faster than the exact heads (README, "Speed"); this script
keeps the prototype and the measurement reproducible.

The cascade (inference only):
1. **Cheap score.** The identity-transform score of every location (the ``sliding-square`` score: the mean of
   the inner correlation cells along the identity grid), a sum of shifted, border-clamped correlation channels
   with fixed bilinear weights (equal to ``grid_sample`` along the identity grid to 1e-7).
2. **Selection.** Per image-class pair, the ``peaks`` best 3 x 3 local maxima of the cheap score, each with the
   locations within ``dilation`` cells (the aligned peak sits a few cells from the identity peak).
3. **Exact head in those windows.** TransformNet's convolutions (7x7, 5x5, 5x5) see 7 cells around a location,
   so each window is computed from its own crop with that halo, as one batch of "valid" convolutions
   (activations outside the map zeroed, as the dense zero padding does): the parameters there equal the dense
   TransformNet's (1e-6). Scores and boxes follow in the windows; every other location scores ``-inf``.

Cost: a window of (2r+1)^2 locations needs the first (dominant) convolution at (2r+9)^2 locations, so the saving
is bounded by the halo, not by the share of selected locations.

Measured per set and setting, in one process at default settings (``image_size="auto"``): the heads' seconds per
class view and level (``Os2dModel.heads`` timed around every call), the speed-up over the exact heads, seconds
per image, VOC mAP@0.5 and its difference to the exact heads, and the share of images whose top-10 detections are
identical (same labels and order, boxes within 0.5 px, scores within 1e-4).

Sets (``../shared/data``): ``fl27-train`` (FlickrLogos-27 dev, the 14 training brands, every 6th image),
``fl27-val`` (the 6 held-out brands, the protocol of ``benchmarks/fl27_table.py``), ``demo`` (the OS2D demo
shelf, hand boxes of ``benchmarks/demo_shelf.py``), ``synth-val`` (``--synth-dir``: synthetic Grocery Store val
shelves, ``recipes/default_model/run.sh`` step 7).

    python benchmarks/cascade_probe.py --sets demo fl27-train --settings 8:1 16:2 32:3 --max-images 40
"""

from __future__ import annotations

import argparse
import csv
import math
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.config import InferenceConfig
from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord
from os2d.data.spec import FL27_TRAIN_BRANDS, DatasetSpec, load_dataset
from os2d.detector import Detector
from os2d.evaluation.detector_method import DetectorMethod
from os2d.evaluation.harness import _class_names, _load_class_images, run_method
from os2d.model.correlation import correlate, l2_normalize
from os2d.model.grids import grid_corners, params_to_affine
from os2d.model.head import HeadOutput
from os2d.model.resample import pool_mask, sample_per_channel_unit
from os2d.model.transform_net import TransformNet
from os2d.results import Detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_shelf import demo_dataset  # noqa: E402
from fl27_table import fl27_val_spec  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Cascade:
    peaks: int = 16
    dilation: int = 2


def identity_scores(corr: Tensor, s: int, pool_border: int) -> Tensor:
    """(N, S*S, H, W) correlation -> (N, H, W) identity-grid scores.

    Class cell (p, q) sits at ``(x + o_q, y + o_p)`` with ``o_i = S/2 * (2i/(S-1) - 1) + 0.5`` cells (the identity
    grid of :func:`os2d.model.grids.unit_grid_in_channel_layout`): a bilinear pair of taps along x per column q,
    then along y per row p, on the border-clamped map. The pool mask is uniform over the inner cells.
    """
    n, _, h, w = corr.shape
    r = s // 2 + 1
    padded = F.pad(corr, (r, r, r, r), mode="replicate")  # = grid_sample's border clamp
    inner = range(pool_border, s - pool_border)
    taps = [_taps(s, i) for i in range(s)]
    rows = padded.new_zeros(n, len(inner), h + 2 * r, w)  # (N, I, H + 2r, W): per inner row p, x sampled
    for q in inner:
        block = padded[:, q * s + pool_border : q * s + s - pool_border]  # channels q*S + p, p inner
        for off, wt in taps[q]:
            rows.add_(block[..., r + off : r + off + w], alpha=wt)
    out = corr.new_zeros(n, h, w)
    for k, p in enumerate(inner):
        for off, wt in taps[p]:
            out.add_(rows[:, k, r + off : r + off + h], alpha=wt)
    return out / (len(inner) ** 2)


def _taps(s: int, i: int) -> list[tuple[int, float]]:
    """Bilinear taps (integer offset, weight) of grid index ``i`` of the identity grid, in cells."""
    o = s / 2.0 * (2.0 * i / (s - 1) - 1.0) + 0.5
    f = math.floor(o)
    frac = o - f
    return [(f, 1.0 - frac)] + ([(f + 1, frac)] if frac > 1e-9 else [])


def find_peaks(cheap: Tensor, peaks: int) -> Tensor:
    """(N, H, W) cheap scores -> (M, 3) (pair, y, x) of the ``peaks`` best 3 x 3 local maxima of each pair."""
    n, h, w = cheap.shape
    is_max = cheap >= F.max_pool2d(cheap[:, None], 3, stride=1, padding=1)[:, 0]
    flat = cheap.masked_fill(~is_max, -math.inf).reshape(n, -1)
    top = flat.topk(min(peaks, h * w), dim=1)
    pair = torch.arange(n, device=cheap.device).view(n, 1).expand_as(top.indices)
    ok = torch.isfinite(top.values)
    idx = top.indices[ok]
    return torch.stack([pair[ok], idx // w, idx % w], dim=1)


def _fold_bn(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm folded into the preceding convolution: (weight, bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return conv.weight * scale.view(-1, 1, 1, 1), (bias - bn.running_mean) * scale + bn.bias


def transform_at_peaks(net: TransformNet, corr: Tensor, peaks: Tensor, radius: int) -> Tensor:
    """TransformNet's parameters in the (2r+1)^2 windows around peaks, equal to the dense ones there.

    Args:
        corr: (N, S*S, H, W) correlation; peaks: (M, 3) (pair, y, x).
    Returns:
        (M, P, 2r+1, 2r+1) parameters at (y + dy, x + dx), |dy|, |dx| <= r (cells outside the map included).
    """
    _, _, h, w = corr.shape
    big = radius + 7
    k = 2 * big + 1
    x = F.pad(l2_normalize(corr.relu(), dim=1, eps=1e-6), (big, big, big, big))  # TransformNet's input, padded
    crops = x.unfold(2, k, 1).unfold(3, k, 1)[peaks[:, 0], :, peaks[:, 1], peaks[:, 2]]  # (M, C, k, k)
    conv1, bn1, _, conv2, bn2, _ = net.conv
    w1, b1 = _fold_bn(conv1, bn1)
    w2, b2 = _fold_bn(conv2, bn2)

    def inside(r: int) -> Tensor:  # (M, 1, 2r+1, 2r+1): 1 where the cell lies in the map
        d = torch.arange(-r, r + 1, device=corr.device)
        ys, xs = peaks[:, 1:2] + d, peaks[:, 2:3] + d
        ok = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
        return ok.unsqueeze(1).to(corr.dtype)

    a1 = F.conv2d(crops, w1, b1).relu_() * inside(radius + 4)  # (M, 128, 2r+9, 2r+9)
    a2 = F.conv2d(a1, w2, b2).relu_() * inside(radius + 2)  # (M, 64, 2r+5, 2r+5)
    return F.conv2d(a2, net.linear.weight, net.linear.bias)  # (M, P, 2r+1, 2r+1)


def _points(theta: Tensor, ys: Tensor, xs: Tensor, s: int, h: int, w: int) -> Tensor:
    """(L, 2, 3) transforms at cells (ys, xs) -> (S*S, L, 2) grid points in ``grid_sample`` units, channel
    ``q*S + p`` = class cell (p, q) (as :func:`os2d.model.grids.unit_grid_in_channel_layout`)."""
    half = s / 2.0
    lin = torch.linspace(-1.0, 1.0, s, dtype=theta.dtype, device=theta.device)
    xq = lin.view(s, 1).expand(s, s).reshape(s * s, 1)
    yp = lin.view(1, s).expand(s, s).reshape(s * s, 1)
    a, b, tx = theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2]
    c, d, ty = theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2]
    x_fm = half * (a * xq + b * yp + tx) + xs.to(theta.dtype) + 0.5  # (S*S, L)
    y_fm = half * (c * xq + d * yp + ty) + ys.to(theta.dtype) + 0.5
    return torch.stack([x_fm * (2.0 / max(w - 1, 1)) - 1.0, y_fm * (2.0 / max(h - 1, 1)) - 1.0], dim=-1)


def cascade_head(features: Tensor, kernels: Tensor, transform_net: TransformNet, invert_transform: bool,
                       grid_size: int, pool_border: int, stride: float, anchor_size: float,
                       settings: Cascade) -> tuple[Tensor, Tensor, Tensor]:
    """The head of :func:`os2d.model.head.os2d_head` for B images and K class views with the cascade.

    Returns:
        scores (B, K, H, W) (``-inf`` outside the windows), boxes (B, K, H, W, 4), corners (B, K, H, W, 4, 2)
        (of the identity window outside the windows).
    """
    b, _, h, w = features.shape
    k = kernels.shape[0]
    s, n, r = grid_size, b * k, settings.dilation
    corr = correlate(features, kernels).reshape(n, s * s, h, w)
    peaks = find_peaks(identity_scores(corr, s, pool_border), settings.peaks)  # (M, 3)

    p = transform_net.num_params
    ident = corr.new_tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if p == 6 else [1.0, 0.0, 1.0, 0.0])
    params = ident.repeat(n, h + 2 * r, w + 2 * r, 1)  # (N, H+2r, W+2r, P): an r-cell margin for the windows
    sel = torch.zeros(n, h + 2 * r, w + 2 * r, dtype=torch.bool, device=corr.device)
    if len(peaks):
        windows = transform_at_peaks(transform_net, corr, peaks, r)  # (M, P, 2r+1, 2r+1)
        d = torch.arange(2 * r + 1, device=corr.device)
        ys = (peaks[:, 1:2] + d).view(-1, 2 * r + 1, 1).expand(-1, -1, 2 * r + 1)  # rows in the margin frame
        xs = (peaks[:, 2:3] + d).view(-1, 1, 2 * r + 1).expand(-1, 2 * r + 1, -1)
        pair = peaks[:, 0].view(-1, 1, 1).expand_as(ys)
        params[pair, ys, xs] = windows.permute(0, 2, 3, 1)  # overlapping windows write equal values
        sel[pair, ys, xs] = True
    params = params[:, r : r + h, r : r + w]
    sel = sel[:, r : r + h, r : r + w]  # (N, H, W) the windows' cells within the map
    theta = params_to_affine(params.permute(0, 3, 1, 2), invert=invert_transform)  # (N, H, W, 2, 3)

    scores = corr.new_full((n, h, w), -math.inf)
    mask = pool_mask(s, pool_border, device=corr.device, dtype=corr.dtype)
    for i in range(n):
        ys, xs = sel[i].nonzero(as_tuple=True)
        if ys.numel() == 0:
            continue
        pts = _points(theta[i, ys, xs], ys, xs, s, h, w)  # (S*S, L, 2)
        sampled = sample_per_channel_unit(corr[i : i + 1], pts.unsqueeze(0))  # (1, S*S, L)
        scores[i, ys, xs] = mask @ sampled[0]
    corners = grid_corners(theta, box_size=anchor_size, stride=stride)  # (N, H, W, 4, 2)
    boxes = torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)
    return scores.view(b, k, h, w), boxes.view(b, k, h, w, 4), corners.view(b, k, h, w, 4, 2)


UNSEEN_DIR = Path.home() / "os2d-runs" / "unseen-logos" / "set"
DENSE_DIR = Path.home() / "os2d-runs" / "dense-shelves"
DENSE_UNSEEN_DIR = Path.home() / "os2d-runs" / "dense-unseen"
DENSE_BLOCKS_DIR = Path.home() / "os2d-runs" / "dense-blocks"


FL27_SIXTHS = {"fl27-train": 0, "fl27-train-b": 3, "fl27-train-c": 1, "fl27-train-d": 4}  # set -> first image of the sixth


def load_set(name: str, synth_dir: Path):
    fl27 = SHARED / "flickrlogos27-dev"
    if name == "fl27-val":
        return load_dataset(fl27_val_spec(fl27))
    if name in FL27_SIXTHS:  # b: the disjoint sixth images[3::6] (recipes/verify_chroma_floor); c, d: [1::6], [4::6]
        # (recipes/level_up_confident, round 2: sixths no rule had looked at)
        ds = load_dataset(DatasetSpec(format="simple_csv", annotations=str(fl27 / "annotations.csv"),
                                      classes=str(fl27 / "class_images.csv"), class_names=FL27_TRAIN_BRANDS,
                                      exclude_class_sources=True, name="fl27-train"))
        start = FL27_SIXTHS[name]
        return ds.subset(image_ids=[im.image_id for im in ds.images[start::6]], name=f"{name}/6")
    if name == "demo":
        return demo_dataset(SHARED / "os2d-demo")
    if name == "synth-val":
        return load_dataset(DatasetSpec(format="simple_csv", annotations=str(synth_dir / "annotations.csv"),
                                        classes=str(synth_dir / "class_images.csv"), image_dir=str(synth_dir),
                                        name="synth-val"))
    if name == "unseen":  # the unseen-class tuning set (recipes/unseen_tuning_set.sh DATA ~/os2d-runs/unseen-logos)
        d = UNSEEN_DIR
        if not (d / "annotations.csv").is_file():
            raise SystemExit(f"{d} has no annotations.csv: bash recipes/unseen_tuning_set.sh ../shared/data {d.parent}")
        return load_dataset(DatasetSpec(format="simple_csv", annotations=str(d / "annotations.csv"),
                                        classes=str(d / "class_images.csv"), image_dir=str(d), name="unseen"))
    if name in ("dense-shelves", "dense-unseen", "dense-blocks"):  # small facings in rows (recipes/dense_shelves_set.sh)
        d = {"dense-shelves": DENSE_DIR, "dense-unseen": DENSE_UNSEEN_DIR, "dense-blocks": DENSE_BLOCKS_DIR}[name]
        if not (d / "annotations.csv").is_file():
            raise SystemExit(f"{d} has no annotations.csv: bash recipes/dense_shelves_set.sh ../shared/data "
                             f"{d.parent}")
        return load_dataset(DatasetSpec(format="simple_csv", annotations=str(d / "annotations.csv"),
                                        classes=str(d / "class_images.csv"), image_dir=str(d), name=name))
    if name == "grocery-real":
        return grocery_real_dataset(SHARED / "grocerystore")
    raise SystemExit(f"unknown set {name!r}")


def add_set_classes(det: Detector, dataset: DetectionDataset) -> list[str]:
    """Register every class of ``dataset`` (its class images) on ``det``; returns the class names in label order."""
    names = _class_names(dataset)
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    return names


def set_detector(set_name: str, weights: str = "default") -> tuple[DetectionDataset, Detector, list[str]]:
    """A set of :func:`load_set` (synthetic val shelves from ``~/os2d-runs/synth-grocery-eval``) and a detector with
    its classes (:func:`add_set_classes`): the dataset, the detector and the class names in label order."""
    ds = load_set(set_name, Path.home() / "os2d-runs" / "synth-grocery-eval")
    det = Detector.from_weights(weights)
    return ds, det, add_set_classes(det, ds)


def probe_cells(box, photo_size: tuple[int, int], probe: int = 768, stride: int = 16) -> float:
    """sqrt(area) of one (x1, y1, x2, y2) box of a photo of ``photo_size`` (w, h) in cells of the automatic scale's
    probe (the photo at sqrt(w*h) = ``probe``, features at ``stride``); at least one pixel of area."""
    area = max(1.0, float((box[2] - box[0]) * (box[3] - box[1])))
    return math.sqrt(area) * probe / math.sqrt(photo_size[0] * photo_size[1]) / stride


def grocery_real_dataset(root: Path) -> DetectionDataset:
    """``benchmarks/grocery_real.py``'s set: the Grocery Store *val* photos of the package classes, each with one
    placeholder box (zeros) labelled its product (it only carries the label: the set is scored per image), and all 31
    package classes' web images as the gallery."""
    with open(root / "class_images.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if "/Packages/" in r["class_image"]]
    index = {r["class_id"]: i for i, r in enumerate(rows)}
    classes = [ClassRecord(class_id=r["class"], name=r["class"], image_paths=[root / r["class_image"]]) for r in rows]
    images = []
    with open(root / "natural_images.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "val" and r["class_id"] in index:
                path = root / r["image"]
                images.append(ImageRecord(image_id=path.stem, path=path, width=None, height=None,
                                          boxes_xyxy=np.zeros((1, 4), np.float32),
                                          labels=np.array([index[r["class_id"]]]), difficult=np.zeros(1, bool)))
    return DetectionDataset(name="grocery-real", images=images, classes=classes)



def raw_second_look_inputs(set_name: str, synth_dir: Path, weights: str, raw_config: InferenceConfig, *,
                           every: int = 1, max_images: int | None = None):
    """For the second-look benchmarks: the set's class names, its images (every ``every``-th, at most
    ``max_images``), the detector (``raw_config``, the set's classes registered) and a generator that yields, per
    image, its raw detections and the level the :class:`~os2d.detector.Detector` hands to the second look (the
    largest)."""
    from os2d.evaluation.harness import _class_names, _load_class_images
    from os2d.inference.pyramid import prepare_levels
    from os2d.io import load_image

    dataset = load_set(set_name, synth_dir)
    det = Detector.from_weights(weights, config=raw_config)
    names = _class_names(dataset)
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    images = dataset.images[::every][:max_images]

    def raw_detections():
        for rec in images:
            levels = prepare_levels(load_image(rec.path), raw_config)
            yield det.detect_pyramid(levels, rec.size()), max(levels, key=lambda t: t.shape[-1] * t.shape[-2])

    return names, images, det, raw_detections()

class TimedHeads:
    """Replaces ``model.heads`` (the exact heads, or the cascade) and sums its wall time and the class views x
    levels it ran."""

    def __init__(self, model, cascade: Cascade | None) -> None:
        self.model, self.inner, self.cascade = model, model.heads, cascade
        self.seconds, self.views = 0.0, 0
        model.heads = self

    def __call__(self, features, kernels, **kw):
        t0 = time.perf_counter()
        if self.cascade is None:
            out = self.inner(features, kernels, **kw)
        else:
            cfg = self.model.config
            scores, boxes, corners = cascade_head(features, kernels.to(features.dtype), self.model.transform_net,
                                                  cfg.invert_transform, cfg.class_grid_size, cfg.pool_border,
                                                  float(self.model.stride), cfg.anchor_size, self.cascade)
            out = HeadOutput(scores=scores, boxes_xyxy=boxes, corners_xy=corners, scores_transform_detached=None,
                             stride=float(self.model.stride), anchor_size=cfg.anchor_size)
        self.seconds += time.perf_counter() - t0
        self.views += kernels.shape[0]
        return out

    def restore(self) -> None:
        del self.model.heads


class CapturedHeads:
    """Replaces ``model.heads``: runs the model's own heads and records the inputs of every call
    (``calls``: features, kernels, aspect)."""

    def __init__(self, model) -> None:
        self.model, self.inner, self.calls = model, model.heads, []
        model.heads = self

    def __call__(self, features, kernels, **kw):
        self.calls.append((features, kernels, kw.get("aspect")))
        return self.inner(features, kernels, **kw)

    def restore(self) -> None:
        del self.model.heads


def print_report(title: str, header: str, lines: list[str]) -> None:
    """A measurement table: title, header, rule, one line per row, then the process's peak resident memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{title}")
    print(header)
    print("-" * len(header))
    print("\n".join(lines))
    print(f"peak RSS of the process: {peak:.0f} MiB")


def same_top(a: Detections, b: Detections, k: int = 10) -> bool:
    n = min(k, len(a.scores))
    if min(k, len(b.scores)) != n:
        return False
    if n == 0:
        return True
    return (torch.equal(a.labels[:n], b.labels[:n])
            and bool(((a.boxes_xyxy[:n] - b.boxes_xyxy[:n]).abs() <= 0.5).all())
            and bool(((a.scores[:n] - b.scores[:n]).abs() <= 1e-4).all()))


def parse_setting(text: str) -> Cascade | None:
    if text == "exact":
        return None
    peaks, dilation = text.split(":")
    return Cascade(peaks=int(peaks), dilation=int(dilation))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["demo", "synth-val"])
    ap.add_argument("--settings", nargs="+", default=["16:2"], help="peaks:dilation")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [("exact", None)] + [(s, parse_setting(s)) for s in args.settings]
    rows = []
    for set_name in args.sets:
        dataset = load_set(set_name, args.synth_dir)
        runs = {}
        for label, cascade in settings:
            det = Detector.from_weights(args.weights, config=InferenceConfig(verify_rescore=0.0))  # the heads alone
            timer = TimedHeads(det.model, cascade)
            ev = run_method(DetectorMethod(det), dataset, config=det.config, progress=False,
                            max_images=args.max_images)
            timer.restore()
            runs[label] = (ev, timer.seconds / max(timer.views, 1), timer.seconds)
            print(f"{set_name} {label}: mAP {100 * ev.result.map:.2f}, heads {timer.seconds:.1f} s, "
                  f"{ev.seconds_per_image:.2f} s/img", flush=True)
        exact, exact_per_view, _ = runs["exact"]
        for label, _ in settings:
            ev, per_view, total = runs[label]
            agree = statistics.mean(same_top(a, b) for a, b in zip(exact.detections, ev.detections, strict=True))
            rows.append((set_name, len(ev.detections), label, per_view, exact_per_view / per_view, total,
                         ev.seconds_per_image, 100 * ev.result.map, 100 * (ev.result.map - exact.result.map),
                         100 * agree))
    print_report(f"heads: exact vs location cascade (peaks:dilation), image_size auto, {torch.get_num_threads()} threads",
                 f"{'set':<11}{'imgs':>5} {'setting':<10}{'heads s/view':>13}{'speed-up':>9}{'heads s':>9}"
                 f"{'s/img':>7}{'mAP':>7}{'dmAP':>7}{'top10 same %':>13}",
                 [f"{r[0]:<11}{r[1]:>5} {r[2]:<10}{r[3]:>13.4f}{r[4]:>8.2f}x{r[5]:>9.1f}{r[6]:>7.2f}{r[7]:>7.2f}"
                  f"{r[8]:>+7.2f}{r[9]:>13.1f}" for r in rows])


if __name__ == "__main__":
    main()
