"""``os2d eval`` (evaluate OS2D or a baseline on an annotated dataset) and ``os2d dataset-stats``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from os2d.apps.cli.common import (
    CliError,
    add_inference_args,
    add_model_args,
    add_output_dir,
    add_quiet,
    check_writable_dir,
    device_from_args,
    inference_config,
)

DEFAULT_METHOD = "os2d"


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dataset (a spec file, or a boxes CSV + class CSV)")
    g.add_argument("--dataset", metavar="SPEC", help="dataset spec (YAML/JSON, see os2d.data.spec.DatasetSpec)")
    g.add_argument("--boxes", metavar="CSV", help="boxes CSV image,class,x1,y1,x2,y2[,difficult] (pixels)")
    g.add_argument("--classes", metavar="CSV", help="class CSV name,path (with --boxes)")
    g.add_argument("--image-dir", metavar="DIR", help="root of the image paths of --boxes (default: its folder)")
    g.add_argument("--class-names", nargs="+", metavar="NAME", help="keep only these classes (others' images stay)")
    g.add_argument("--exclude-class-sources", action="store_true",
                   help="drop the images the class images were cropped from (class CSV column source_image)")


def dataset_from_args(args: argparse.Namespace):
    """(spec, dataset) from ``--dataset`` or ``--boxes/--classes``; a bad spec or option -> CliError."""
    from os2d.data.spec import load_dataset

    try:
        spec = _spec_from_args(args)
    except ValueError as e:  # DatasetSpec validation: the user's spec file or options
        raise CliError(str(e)) from e
    return spec, load_dataset(spec)


def _spec_from_args(args: argparse.Namespace):
    from os2d.data.spec import DatasetSpec, load_spec

    if args.dataset and (args.boxes or args.classes):
        raise CliError("give either --dataset SPEC or --boxes CSV --classes CSV, not both")
    if args.dataset:
        spec = load_spec(args.dataset)
    elif args.boxes and args.classes:
        for flag, path in (("--boxes", args.boxes), ("--classes", args.classes)):
            if not Path(path).is_file():
                raise CliError(f"{flag}: file not found: {path}")
        # absolute paths: the evaluation folder reloads its dataset from any working directory (os2d weights
        # calibrate, os2d eval --compare)
        spec = DatasetSpec(format="simple_csv", annotations=str(Path(args.boxes).resolve()),
                           classes=str(Path(args.classes).resolve()),
                           image_dir=str(Path(args.image_dir).resolve()) if args.image_dir else None)
    else:
        raise CliError("no dataset: give --dataset SPEC, or --boxes CSV and --classes CSV")
    if args.image_dir and args.dataset:
        raise CliError("--image-dir goes with --boxes; put image_dir in the dataset spec instead")
    changes: dict[str, Any] = {}
    if args.class_names:
        changes["class_names"] = tuple(args.class_names)
    if args.exclude_class_sources:
        changes["exclude_class_sources"] = True
    if changes:
        spec = DatasetSpec.from_dict({**spec.to_dict(), **changes})
    return spec


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def format_table(evaluation: Any) -> str:
    """Per-class AP/GT/TP/FP rows and the summary line of an evaluation."""
    res = evaluation.result
    t = f"{res.iou_threshold:.2f}"
    width = max([len("class")] + [len(n) for n in evaluation.class_names])
    lines = [f"{'class':<{width}}  {'GT':>5}  {'AP@' + t:>8}  {'TP':>5}  {'FP':>7}"]
    for c, name in enumerate(evaluation.class_names):
        lines.append(f"{name:<{width}}  {int(res.num_gt_per_class[c]):>5}  {_fmt(float(res.ap_per_class[c])):>8}  "
                     f"{int(res.num_tp_per_class[c]):>5}  {int(res.num_fp_per_class[c]):>7}")
    lines.append(f"mAP@{t} {_fmt(res.map)} | mAPw@{t} {_fmt(res.map_weighted)} | recall@{t} {_fmt(res.recall)} | "
                 f"AP joint {_fmt(res.ap_joint_classes)} | {evaluation.seconds_per_image:.3f} s/image "
                 f"({len(evaluation.detections)} images, classes {evaluation.class_seconds:.1f} s)")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from os2d.config import AUTO
    from os2d.data.spec import dataset_image_size
    from os2d.evaluation.baselines import AUTO_SCALE_METHODS, MODEL_METHODS
    from os2d.evaluation.harness import check_iou_threshold, evaluate_method

    if args.max_images is not None and args.max_images < 1:
        raise CliError(f"--max-images must be positive, got {args.max_images}")
    try:
        check_iou_threshold(args.iou)
    except ValueError as e:
        raise CliError(f"--iou: {e}") from e
    if args.image_size is not None:  # every option checked before any work
        config = inference_config(args, image_size=None if args.image_size == 0 else args.image_size)
    out = Path(args.output_dir)
    check_writable_dir(out, "--output-dir")
    spec, dataset = dataset_from_args(args)
    if args.image_size is None:
        image_size: int | str | None = spec.image_size
        if image_size is None and args.method in AUTO_SCALE_METHODS:
            image_size = AUTO
        elif image_size is None:  # a baseline with one fixed size: the size that makes the objects ~240 px
            try:
                image_size = dataset_image_size(spec, dataset)
            except ValueError as e:
                raise CliError(f"{e}; give --image-size") from e
        config = inference_config(args, image_size=image_size)
    if config.image_size == AUTO and args.method not in AUTO_SCALE_METHODS:
        raise CliError(f"--image-size auto works with {', '.join(AUTO_SCALE_METHODS)}; --method {args.method} "
                       "needs a number of pixels (or 0)")

    options = {}
    for flag, method, option in (("detector", "detector-retrieval", "detector"), ("coae", "coae", "weights")):
        path = getattr(args, flag)  # a baseline's own weights file
        if path is None:
            continue
        if args.method != method:
            raise CliError(f"--{flag} goes with --method {method}")
        if not Path(path).is_file():
            raise CliError(f"--{flag}: file not found: {path}")
        options[option] = path
    model = None
    if args.method in MODEL_METHODS:
        from os2d.weights import load_model

        model = load_model(args.weights).to(device_from_args(args.device))
    try:
        evaluation = evaluate_method(args.method, dataset, config, model=model, progress=not args.quiet,
                                     max_images=args.max_images, detections_path=out / "detections.jsonl",
                                     iou_threshold=args.iou, plus_one=args.voc_plus_one, method_options=options)
    except (ImportError, FileNotFoundError) as e:
        raise CliError(str(e)) from e
    payload = evaluation.to_dict()
    payload["config"]["dataset_spec"] = spec.to_dict()
    payload["config"]["weights"] = args.weights if model is not None else None
    if options:
        payload["config"]["method_options"] = options
    from os2d.files import atomic_json_dump

    atomic_json_dump(out / "metrics.json", payload)
    written = ["metrics.json", "detections.jsonl"]
    if not args.no_plots:
        from os2d.evaluation.plots import plot_pr_curves

        try:
            pngs = plot_pr_curves(evaluation, out / "pr")
        except ImportError as e:
            raise CliError(f"{e} (or pass --no-plots)") from e
        written.append(f"pr/ ({len(pngs)} PNG)")
    scales = ", ".join(f"{s:g}" for s in config.scales)
    print(f"{args.method} on {dataset.name}: {len(evaluation.detections)} images, {len(dataset.classes)} classes, "
          f"image size {config.image_size}, scales {scales}"
          + (f", weights {args.weights}" if model is not None else ""))
    print(format_table(evaluation))
    print(f"wrote {', '.join(written)} in {out}", file=sys.stderr)
    return 0


def cmd_dataset_stats(args: argparse.Namespace) -> int:
    from os2d.data.scales import suggest_image_size

    spec, dataset = dataset_from_args(args)
    stats = dataset.stats()
    try:
        stats["suggested_image_size"] = suggest_image_size(dataset)
    except ValueError:
        stats["suggested_image_size"] = None
    stats["spec_image_size"] = spec.image_size
    stats["images_without_boxes"] = sum(1 for im in dataset.images if im.num_boxes == 0)
    per_class = [0] * len(dataset.classes)
    for im in dataset.images:
        for lab in im.labels.tolist():
            per_class[lab] += 1
    stats["boxes_per_class"] = dict(zip(dataset.class_names, per_class, strict=True))
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    med = stats["median_object_size"]
    print(f"dataset {stats['name']}: {stats['images']} images ({stats['images_without_boxes']} without boxes), "
          f"{stats['boxes']} boxes ({stats['non_difficult_boxes']} non-difficult), {stats['classes']} classes")
    print(f"median object size: {med:.1f} px" if med is not None else "median object size: n/a (no boxes)")
    sizes = dataset.object_sizes()
    if sizes.size:
        import numpy as np

        q = np.percentile(sizes, [10, 90])
        print(f"object size 10th-90th percentile: {q[0]:.1f} - {q[1]:.1f} px")
    sug = stats["suggested_image_size"]
    print(f"suggested image size (objects ~240 px): {sug if sug is not None else 'n/a'}"
          + (f"; the spec sets {spec.image_size}" if spec.image_size is not None else ""))
    counts = sorted(stats["boxes_per_class"].items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{n} {c}" for n, c in counts[:10])
    print(f"boxes per class: {shown}" + (f", ... ({len(counts) - 10} more)" if len(counts) > 10 else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``eval`` and ``dataset-stats``."""
    from os2d.evaluation.baselines import METHODS

    p = sub.add_parser("eval", help="evaluate OS2D or a baseline on an annotated dataset (VOC mAP), write "
                                    "metrics.json, detections.jsonl and PR plots")
    _add_dataset_args(p)
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                   help="os2d (model with TransformNet), sliding-square / sliding-ar (paper's sliding-window "
                        "baselines on the model's features), sift, template (OpenCV), detector-retrieval (paper's "
                        "main baseline: class-agnostic detector + GeM retrieval on the model's trunk), coae (the same proposals "
                        "ranked by a co-attention / co-excitation head, Hsieh et al. 2019)")
    add_model_args(p, weights_help="weights name or checkpoint (os2d, sliding-*, detector-retrieval, coae)")
    p.add_argument("--detector", default=None, metavar="FILE",
                   help="detector-retrieval: class-agnostic detector weights from `os2d train-detector` "
                        "(default: the packaged one, trained on the default weights' trunk)")
    p.add_argument("--coae", default=None, metavar="FILE",
                   help="coae: CoAE weights from `os2d train-coae` (default: the packaged one, trained on the "
                        "default weights' trunk)")
    add_inference_args(p, image_size_help="auto: levels chosen per image as in `os2d detect`; N: resize so "
                                          "sqrt(w*h) = N at scale 1; 0: keep sizes (default: the spec's "
                                          "image_size, else auto for os2d and sliding-square, else the size that "
                                          "makes the annotated objects ~240 px)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a true positive (default 0.5)")
    p.add_argument("--voc-plus-one", action="store_true", help="integer-pixel IoU (+1) as the reference code")
    add_output_dir(p, deprecated=("--out",), help="folder for metrics.json, detections.jsonl and pr/")
    p.add_argument("--no-plots", action="store_true", help="skip the PR-curve PNGs")
    add_quiet(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("dataset-stats", help="print dataset statistics and the suggested image size")
    _add_dataset_args(p)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_dataset_stats)


__all__ = ["add_parser", "cmd_dataset_stats", "cmd_eval", "dataset_from_args", "format_table"]
