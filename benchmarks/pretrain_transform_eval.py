"""Pretrained TransformNet vs the identity TransformNet: held-out alignment error, optionally detection mAP.

1. Alignment (always): a fixed, seeded set of random affine warps of held-out photos (``--photos``; the
   same generator as ``os2d pretrain-transform``, a different seed from its caches) goes through the full OS2D
   head of both models; the table shows the mean grid-point distance between the predicted and the true
   placement of the class image (pixels of the 352 px canvas, and in 16 px feature cells), the share under one
   cell, the error averaged over the 5x5 locations around the object, the IoU of the predicted box and the
   detection score at the object.
2. Detection (with ``--boxes``/``--classes`` or ``--dataset``): VOC mAP@0.5 of both models through
   ``os2d.evaluation.harness.evaluate_model`` (same backbone, same inference settings).

    python benchmarks/pretrain_transform_eval.py --weights /work/runs/pretrain-transform/model.pt \\
        --photos ../shared/data/grocerystore/dataset/val --pairs 300
    python benchmarks/pretrain_transform_eval.py --weights RUN/model.pt --photos DIR \\
        --boxes SYNTH/annotations.csv --classes SYNTH/class_images.csv --image-size 1024 --max-images 50
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.pretrain import PretrainConfig, evaluate_alignment, format_table, list_photos, make_pairs
from os2d.weights import load_model


def identity_copy(model):
    other = copy.deepcopy(model)
    other.transform_net.reset_to_identity()
    return other.eval()


def alignment(models: dict, photos: list[Path], pairs: int, seed: int, canvas: int) -> dict[str, dict[str, float]]:
    config = PretrainConfig(canvas_size=canvas)
    first = next(iter(models.values()))
    held_out = make_pairs(first, photos, config, num_pairs=pairs, seed=seed, shard=0, full_maps=True)
    return {name: evaluate_alignment(m, held_out, progress=sys.stderr.isatty()).summary()
            for name, m in models.items()}


def detection(models: dict, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from os2d.data.simple_csv import read_simple_csv
    from os2d.data.spec import load_dataset, load_spec
    from os2d.evaluation.harness import evaluate_model

    if args.dataset:
        dataset = load_dataset(load_spec(args.dataset))
    else:
        dataset = read_simple_csv(args.boxes, args.classes)
    config = InferenceConfig(image_size=args.image_size, scales=tuple(args.scales))
    out = {}
    for name, model in models.items():
        t = time.time()
        ev = evaluate_model(model, dataset, config, progress=sys.stderr.isatty(), max_images=args.max_images)
        out[name] = {"mAP": float(ev.result.map), "recall": float(ev.result.recall), "images": len(ev.detections),
                     "seconds": round(time.time() - t, 1)}
        print(f"{name}: mAP {out[name]['mAP']}, recall {out[name]['recall']} on {len(ev.detections)} images "
              f"({out[name]['seconds']} s)", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="model with the pretrained TransformNet (model.pt)")
    p.add_argument("--photos", help="held-out photos (not used for pretraining); needed unless --pairs 0")
    p.add_argument("--pairs", type=int, default=300, help="held-out warps (0: skip the alignment table)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--canvas-size", type=int, default=352)
    p.add_argument("--boxes", help="detection: boxes CSV (simple format)")
    p.add_argument("--classes", help="detection: class CSV name,path")
    p.add_argument("--dataset", help="detection: a dataset spec instead of --boxes/--classes")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.pairs > 0 and not args.photos:
        p.error("--photos is required unless --pairs 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    pretrained = load_model(args.weights)
    models = {"identity": identity_copy(pretrained), "pretrained": pretrained}
    results: dict = {"weights": str(args.weights)}
    if args.pairs > 0:
        align = alignment(models, list_photos(args.photos), args.pairs, args.seed, args.canvas_size)
        results["alignment"] = align
        print(f"held-out alignment, {args.pairs} warps of {args.photos} (seed {args.seed}):")
        print(format_table(align))
    if args.dataset or args.boxes:
        if not args.dataset and not args.classes:
            p.error("--boxes needs --classes")
        det = detection(models, args)
        results["detection"] = det
        print("\ndetection (VOC mAP@0.5):")
        for name, d in det.items():
            print(f"{name:12s} mAP {d['mAP']:.4f}  recall {d['recall']:.4f}  ({d['images']} images, {d['seconds']} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
