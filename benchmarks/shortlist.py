"""What the class shortlist costs in mAP and buys in speed, on FlickrLogos-27 (../shared/data/flickrlogos27-dev).

One-shot protocol of the data's README: all 20 brands are the classes, the class image of a brand is
``class_images/<Brand>.jpg`` (a crop of one box); every image is a test image, except that a brand's crop source
is not a test image for that brand (its boxes and its detections of that brand are left out). VOC AP@0.5 with
``os2d.evaluation.metrics.evaluate_detections``.

Quality: per image the backbone and the heads of all classes run once; the detections of a K-shortlist are the
NMS of the candidates of the K shortlisted classes' views only, which is what ``detect(shortlist_top_k=K)``
computes (tests/test_shortlist.py; checked here again on ``--verify`` images). Speed: real end-to-end
``Detector.detect`` runs, full and each K interleaved, on ``--timing-images`` images (median s/image).
"Shortlist recall" = the fraction of (image, brand) pairs with a box of that brand whose brand is shortlisted;
"oracle" = the same for a shortlist of the K brands with the best full-run detection in the image (the ranking
the heads themselves would give).

    python benchmarks/shortlist.py --every 4 --ks 3 5 10 --timing-images 6 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import platform
import resource
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from os2d.detector import Detector
from os2d.evaluation.metrics import ImageGroundTruth, evaluate_detections
from os2d.inference.decode import LevelCandidates, level_candidates, merge_and_nms
from os2d.inference.pyramid import prepare_levels
from os2d.inference.shortlist import class_descriptors, shortlist_views, top_classes, views_of_classes
from os2d.io import load_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickrlogos27-dev"


def read_fl27(data: Path) -> tuple[list[str], dict[str, str], dict[str, list[tuple[str, list[float]]]]]:
    """Brands (sorted), brand -> class-image source image, image -> [(brand, box_xyxy)]."""
    gt: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    with open(data / "annotations.csv", newline="") as f:
        for row in csv.DictReader(f):
            gt[row["image"]].append((row["class"], [float(row[k]) for k in ("x1", "y1", "x2", "y2")]))
    sources = {}
    with open(data / "class_images.csv", newline="") as f:
        for row in csv.DictReader(f):
            sources[row["class"]] = row["source_image"]
    return sorted(sources), sources, dict(gt)


def subset_candidates(cands: list[LevelCandidates], views: torch.Tensor) -> list[LevelCandidates]:
    """The candidates of the given views only (view indices kept: labels come from the full ``view_class``)."""
    out = []
    for c in cands:
        m = torch.isin(c.views, views.to(c.views.device))
        out.append(LevelCandidates(c.boxes_xyxy[m], c.scores[m], c.views[m], c.corners_xy[m]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--every", type=int, default=1, help="use images[::every] of the sorted image list")
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--max-detections", type=int, default=100)
    ap.add_argument("--timing-images", type=int, default=8, help="images timed end to end per setting")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--verify", type=int, default=2, help="images on which the derived K-runs are checked "
                                                           "against real shortlist runs")
    args = ap.parse_args()
    if not (args.data / "annotations.csv").is_file():
        raise SystemExit(f"FlickrLogos-27 data not found at {args.data}")

    if args.threads:
        torch.set_num_threads(args.threads)
    brands, sources, gt = read_fl27(args.data)
    images = sorted(gt)[:: args.every]
    det = Detector.from_weights(args.weights, image_size=args.image_size, scales=tuple(args.scales),
                                max_detections=args.max_detections)
    for b in brands:
        det.add_class(b, args.data / "class_images" / f"{b}.jpg")
    g = det.gallery
    assert g.kernels is not None
    model, cfg = det.model, det.config
    desc = class_descriptors(g.kernels, model.config.pool_border)
    settings = ["full"] + [f"K={k}" for k in args.ks]
    dets: dict[str, list] = {s: [] for s in settings}
    gts, pairs, hits, oracle_hits = [], 0, defaultdict(int), defaultdict(int)
    t_feat, t_short, t_heads = [], [], []
    t_start = time.perf_counter()
    with torch.no_grad():
        for n, name in enumerate(images):
            img = load_image(args.data / name)
            levels = prepare_levels(img, cfg)
            t0 = time.perf_counter()
            feats = [model.extract_features(lv[None]) for lv in levels]
            t1 = time.perf_counter()
            _, scores = shortlist_views(feats, g.kernels, g.view_class, len(brands), 1,
                                        grid_size=model.config.class_grid_size,
                                        pool_border=model.config.pool_border, class_desc=desc)
            t2 = time.perf_counter()
            cands = [level_candidates(model, lv, g.kernels, img.size, cfg, features=f)
                     for lv, f in zip(levels, feats, strict=True)]
            t3 = time.perf_counter()
            t_feat.append(t1 - t0)
            t_short.append(t2 - t1)
            t_heads.append((t3 - t2) / len(brands))
            # a brand's crop source is not a test image for that brand: drop its boxes and detections there
            excluded = {brands.index(b) for b in brands if sources[b] == name}
            boxes = [(brands.index(c), bx) for c, bx in gt[name] if brands.index(c) not in excluded]
            gts.append(ImageGroundTruth(torch.tensor([bx for _, bx in boxes]).view(-1, 4),
                                        torch.tensor([c for c, _ in boxes], dtype=torch.long)))
            present = {c for c, _ in boxes}
            pairs += len(present)
            full_best = None
            for s in settings:
                if s == "full":
                    d = merge_and_nms(cands, g.view_class, brands, img.size, cfg)
                    full_best = torch.full((len(brands),), -float("inf")).scatter_reduce(
                        0, d.labels, d.scores, reduce="amax")  # the heads' own best score per class
                else:
                    k = int(s[2:])
                    chosen = top_classes(scores, k)
                    hits[s] += len(present & set(chosen.tolist()))
                    oracle_hits[s] += len(present & set(top_classes(full_best, k).tolist()))
                    views = views_of_classes(g.view_class, chosen)
                    d = merge_and_nms(subset_candidates(cands, views), g.view_class, brands, img.size, cfg)
                    if n < args.verify:
                        real = det.detect(img, shortlist_top_k=k)
                        assert torch.equal(real.labels, d.labels), f"{name} K={k}: labels differ"
                        torch.testing.assert_close(real.scores, d.scores, atol=1e-5, rtol=0)
                if excluded:
                    d = d.filter(~torch.isin(d.labels, torch.tensor(sorted(excluded))))
                dets[s].append(d)
            if (n + 1) % 20 == 0:
                print(f"  {n + 1}/{len(images)} images, {time.perf_counter() - t_start:.0f} s", flush=True)

    # end-to-end timing, settings interleaved per image
    timing: dict[str, list[float]] = {s: [] for s in settings}
    for name in images[: args.timing_images]:
        path = args.data / name
        for s in settings:
            k = None if s == "full" else int(s[2:])
            t0 = time.perf_counter()
            det.detect(path, shortlist_top_k=k)
            timing[s].append(time.perf_counter() - t0)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; weights {args.weights}, image_size {args.image_size}, "
          f"scales {args.scales}, max {args.max_detections} detections/image")
    print(f"FlickrLogos-27 dev: {len(images)} images (sorted list, every {args.every}), {len(brands)} brands, "
          f"{sum(len(x.labels) for x in gts)} GT boxes, {pairs} (image, brand) pairs; "
          f"timing on {min(args.timing_images, len(images))} images")
    print(f"stages (median): features {statistics.median(t_feat):.3f} s/image, shortlist "
          f"{statistics.median(t_short) * 1000:.1f} ms/image ({len(brands)} classes), heads "
          f"{statistics.median(t_heads):.3f} s/image/class")
    hdr = (f"{'setting':<9}{'classes':>8}{'shortlist recall':>18}{'oracle':>8}{'mAP@0.5':>9}{'delta':>8}"
           f"{'recall':>8}{'s/image':>9}{'speed-up':>10}")
    print(hdr)
    print("-" * len(hdr))
    base_map = base_t = float("nan")
    for s in settings:
        res = evaluate_detections(dets[s], gts, len(brands), iou_threshold=0.5, class_names=brands)
        t = statistics.median(timing[s]) if timing[s] else float("nan")
        if s == "full":
            base_map, base_t = res.map, t
        k = len(brands) if s == "full" else int(s[2:])
        rec = 1.0 if s == "full" else hits[s] / max(pairs, 1)
        orc = 1.0 if s == "full" else oracle_hits[s] / max(pairs, 1)
        delta = "" if s == "full" else f"{100 * (res.map - base_map):+.2f}"
        print(f"{s:<9}{k:>8}{rec:>18.3f}{orc:>8.3f}{100 * res.map:>9.2f}{delta:>8}{res.recall:>8.3f}{t:>9.2f}"
              f"{base_t / t:>9.2f}x")
    print(f"mAP and delta in points (x100); oracle = recall of a shortlist of the K classes with the best full-run "
          f"detection (what the heads themselves would pick); recall = detection recall at IoU 0.5; "
          f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
