"""FlickrLogos-27 one-shot table: OS2D and the baselines on the 6 validation brands of the fixed brand split.

Protocol (``../shared/data/flickrlogos27-dev``, see its README):
  * classes: :data:`os2d.data.spec.FL27_VAL_BRANDS` (``sorted(brands)[2::3]``: Citroen, Ford, Intel, Nike,
    Puma, Texaco), one class image each: ``class_images/<Brand>.jpg`` (a crop of that brand's largest box);
  * test images: every annotated image of the set (all 20 brands) except the 6 source images of those crops;
    boxes of the other 14 brands are dropped, their images stay as negatives (592 images, 245 boxes);
  * image size: ``suggest_image_size`` of that dataset (879: the median object becomes ~240 px) unless
    ``--image-size``; pyramid ``--scales`` (default 0.5 0.71 1 1.41) for every method (template: object sizes
    ``240 / s``; SIFT: the original image, it is scale invariant);
  * at most ``--pre-nms-top-k`` (500) candidates per class view and level before NMS (0.3), at most 100
    detections per image after it;
  * VOC AP at IoU 0.5 (all-point), mAP over the 6 brands, recall = TP / GT over all brands, seconds per image
    (loading + detection, this machine).

Methods: ``os2d`` (``--weights``, default: the shipped ``os2d-lite0-v2``; weights whose TransformNet is the
identity make it ``sliding-square``, not run twice), ``sliding-square`` and ``sliding-ar`` (on the features of
``--sliding-weights``, default the untrained ImageNet backbone), ``sift``, ``template``.

    python benchmarks/fl27_table.py --out /tmp/fl27_table              # full protocol (hours on 2 cores)
    python benchmarks/fl27_table.py --max-images 100 --methods sift template
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.data.spec import FL27_VAL_BRANDS, DatasetSpec, dataset_image_size, load_dataset
from os2d.evaluation.baselines import METHODS, MODEL_METHODS
from os2d.evaluation.harness import evaluate_method
from os2d.files import atomic_json_dump
from os2d.weights import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickrlogos27-dev"
DEFAULT_SCALES = (0.5, 0.71, 1.0, 1.41)


def fl27_val_spec(data: Path) -> DatasetSpec:
    """The validation-brand dataset of the fixed split (class-image sources excluded)."""
    return DatasetSpec(format="simple_csv", annotations=str(data / "annotations.csv"),
                       classes=str(data / "class_images.csv"), class_names=FL27_VAL_BRANDS,
                       exclude_class_sources=True, name="fl27-val")


def transform_is_identity(model) -> bool:
    """True when the TransformNet's output is the identity everywhere (last layer zero, identity bias)."""
    lin = getattr(model.transform_net, "linear", None)
    if lin is None:
        return False
    p = lin.bias.numel()
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if p == 6 else [1.0, 0.0, 1.0, 0.0])
    return bool((lin.weight == 0).all()) and torch.equal(lin.bias.detach().cpu(), ident)


def fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--weights", default="default", help="weights of the os2d row")
    ap.add_argument("--sliding-weights", default="efficientnet_lite0-imagenet",
                    help="backbone of the sliding-window rows (default: the untrained ImageNet features)")
    ap.add_argument("--image-size", type=int, default=None, help="default: suggest_image_size of the dataset")
    ap.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_SCALES))
    ap.add_argument("--pre-nms-top-k", type=int, default=500,
                    help="candidates kept per class view and level before NMS (NMS of thousands dominates the time)")
    ap.add_argument("--max-images", type=int, default=None, help="first N images only (quick runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="folder for per-method metrics.json + detections.jsonl")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if not (args.data / "annotations.csv").is_file():
        sys.exit(f"FlickrLogos-27 data not found under {args.data}")

    spec = fl27_val_spec(args.data)
    dataset = load_dataset(spec)
    image_size = args.image_size or dataset_image_size(spec, dataset)
    config = InferenceConfig(image_size=image_size, scales=tuple(args.scales), pre_nms_top_k=args.pre_nms_top_k)
    n_images = len(dataset.images) if args.max_images is None else min(args.max_images, len(dataset.images))
    print(f"FL27 val brands {', '.join(FL27_VAL_BRANDS)}: {n_images} of {len(dataset.images)} images, "
          f"{dataset.num_boxes} boxes in all; image size {image_size}, scales {args.scales}, "
          f"weights {args.weights} (sliding rows: {args.sliding_weights}), pre-NMS top {args.pre_nms_top_k}, max {config.max_detections} detections per image",
          flush=True)

    models = {}
    if "os2d" in args.methods:
        models["os2d"] = load_model(args.weights).to(args.device)
    if set(args.methods) & (set(MODEL_METHODS) - {"os2d"}):
        sliding = (models["os2d"] if args.sliding_weights == args.weights and "os2d" in models
                   else load_model(args.sliding_weights).to(args.device))
        models.update({m: sliding for m in MODEL_METHODS if m != "os2d"})
    rows: dict[str, dict] = {}
    for method in args.methods:
        model = models.get(method)
        if (method == "os2d" and transform_is_identity(model) and "sliding-square" in args.methods
                and args.sliding_weights == args.weights):
            rows[method] = {"same_as": "sliding-square"}
            continue
        t0 = time.perf_counter()
        out_dir = args.out / method if args.out else None
        ev = evaluate_method(method, dataset, config, model=model if method in MODEL_METHODS else None,
                             device=args.device, progress=not args.quiet, max_images=args.max_images,
                             detections_path=out_dir / "detections.jsonl" if out_dir else None)
        d = ev.to_dict()
        if out_dir:
            d["config"]["weights"] = (args.weights if method == "os2d" else
                                      args.sliding_weights if method in MODEL_METHODS else None)
            atomic_json_dump(out_dir / "metrics.json", d)
        m = d["metrics"]
        rows[method] = {"mAP": m["mAP@0.50"], "recall": m["recall@0.50"], "s_per_image": ev.seconds_per_image,
                        "per_class": {k: v["AP@0.50"] for k, v in m["per_class"].items()},
                        "wall_s": time.perf_counter() - t0}
        print(f"{method}: mAP {fmt(m['mAP@0.50'])}, recall {fmt(m['recall@0.50'])}, "
              f"{ev.seconds_per_image:.2f} s/image", flush=True)

    brands = list(FL27_VAL_BRANDS)
    print()
    print(f"| method | {' | '.join(brands)} | mAP@0.5 | recall | s/image |")
    print("|---|" + "---:|" * (len(brands) + 3))
    for method, r in rows.items():
        if "same_as" in r:
            r = {**rows[r["same_as"]], "note": f"= {r['same_as']} (identity TransformNet)"}
        cells = [fmt(r["per_class"][b]) for b in brands]
        name = method if "note" not in r else f"{method} {r['note']}"
        print(f"| {name} | {' | '.join(cells)} | {fmt(r['mAP'])} | {fmt(r['recall'])} | {r['s_per_image']:.2f} |")
    if args.out:
        atomic_json_dump(args.out / "table.json", {"image_size": image_size, "scales": args.scales,
                                                    "pre_nms_top_k": args.pre_nms_top_k,
                                                    "weights": args.weights, "sliding_weights": args.sliding_weights,
                                                    "images": n_images, "rows": rows})


if __name__ == "__main__":
    main()
