"""``os2d detect``: class images in, detections of many input images out (JSON, or resumable JSON Lines)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from os2d.apps.cli.common import (
    CliError,
    add_class_args,
    add_inference_args,
    add_model_args,
    add_output_file,
    add_quiet,
    check_writable_dir,
    check_writable_file,
    classes_from_args,
    device_from_args,
    inference_config,
    parse_class_arg,
    read_image_list,
    register_classes,
)


def cmd_detect(args: argparse.Namespace) -> int:
    from os2d.runner import Shard, discover_images, find_shards, merge_shards

    output = None if args.output in (None, "-") else Path(args.output)  # None: stdout (JSON with "-", else a listing)
    jsonl = output is not None and output.suffix.lower() == ".jsonl"
    try:
        images = discover_images(list(args.images) + list(args.image_sources or []))
    except ValueError as e:
        raise CliError(str(e)) from e
    if args.images_from:
        images += read_image_list(args.images_from)
    if args.merge:
        if output is None or not jsonl:
            raise CliError("--merge combines the shard files of a .jsonl output: give --output NAME.jsonl")
        check_writable_file(output, "--output")
        shards = find_shards(output)
        if not shards:
            raise CliError(f"no shard files {output.stem}.rank*.jsonl beside {output}")
        summary = merge_shards(shards, output, order=images or None)
        print(f"merged {len(shards)} shards into {output}: {summary.images} images ({summary.failed} failed)"
              + (f"; {len(summary.missing)} input images are in no shard" if summary.missing else ""),
              file=sys.stderr)
        return 1 if summary.missing else 0
    if not images:
        raise CliError("no input images (give IMAGE paths, --images DIR|GLOB|LIST or --images-from FILE)")
    classes = classes_from_args(args)
    if not classes and not args.gallery:
        raise CliError("no classes: give --class NAME=PATH, --classes CSV or --gallery FILE")
    try:
        shard = Shard.from_env()
    except ValueError as e:
        raise CliError(str(e)) from e
    if shard.world_size > 1 and not jsonl:
        raise CliError(f"a sharded run (WORLD_SIZE={shard.world_size}) writes JSON Lines: give --output NAME.jsonl")
    if args.workers < 0 or args.prefetch < 1:
        raise CliError("--workers must be >= 0 and --prefetch >= 1")
    if output is not None:
        check_writable_file(output, "--output")
    check_writable_file(args.save_gallery, "--save-gallery")
    check_writable_dir(args.draw, "--draw")
    plan = _check_report_args(args, jsonl)
    config = inference_config(args)

    from os2d.detector import Detector

    detector = Detector.from_weights(args.weights, device=device_from_args(shard.device(args.device)), config=config)
    if args.unknown is not None and args.unknown < 0 and detector.confidence_threshold is None:
        raise CliError("--unknown: these weights have no calibrated confidence threshold; give the score at which "
                       "a detection is known: --unknown SCORE")
    if args.report and args.score_threshold is None and detector.confidence_threshold is None:
        raise CliError("--report counts facings: give --score-threshold (these weights have no calibrated "
                       "confidence threshold)")
    negatives = [parse_class_arg(n, "--negative") for n in args.negative or []]
    register_classes(detector, classes, gallery=args.gallery, negatives=negatives)
    if args.save_gallery and shard.rank == 0:
        detector.save_gallery(args.save_gallery)
    if jsonl:
        from os2d.runner.identity import class_images_digest

        identity = class_images_digest(classes + [(f"not:{n}", path) for n, path in negatives], args.gallery)
        return _detect_jsonl(args, detector, images, output, shard, identity)
    return _detect_json(args, detector, images, output, plan)


def _detection_line(d: dict[str, Any]) -> str:
    """One detection record as a line of the terminal output: label, score, confidence (if calibrated), box."""
    conf = f" confidence {d['confidence']:.2f}" if "confidence" in d else ""
    return f"{d['label']:>20s} {d['score']:.3f}{conf} {[round(v, 1) for v in d['box_xyxy']]}"


def _print_listing(record: dict[str, Any], threshold: float | None) -> None:
    """Without ``--output``: one image's detections on stdout, those at or above the calibrated confidence
    ``threshold`` (the ones ``--draw`` shows), or the 10 best for weights without one."""
    dets = record["detections"]
    if threshold is None:
        shown, what = dets[:10], f"{min(len(dets), 10)} best of {len(dets)} detections"
    else:
        shown = [d for d in dets if d.get("confidence", 0.0) >= threshold]
        what = f"{len(shown)} detections at confidence >= {threshold:.2f} ({len(dets)} in all)"
    print(f"{record['path']}: {what}")
    for d in shown:
        print(_detection_line(d))
    for u in record.get("unknown", []):
        print(f"{'unknown':>20s} {[round(v, 1) for v in u['box_xyxy']]}")
    if not shown and dets:
        best = dets[0]
        conf = f", confidence {best['confidence']:.2f}" if "confidence" in best else ""
        print(f"{'':>20s} none; the best: {best['label']} {best['score']:.3f}{conf}")


def _one_label_iou(text: str) -> float | str:
    """``--report-one-label``: an IoU in (0, 1], or ``"off"``."""
    if text.strip().lower() == "off":
        return "off"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IoU in (0, 1] or 'off', got {text!r}") from None
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected an IoU in (0, 1] or 'off', got {text!r}")
    return value


def _check_report_args(args: argparse.Namespace, jsonl: bool) -> dict | None:
    """``--report`` / ``--planogram`` / ``--unknown``: checked (and the planogram read) before any work."""
    if args.unknown is not None and jsonl:
        raise CliError("--unknown works with a .json --output (one document at the end), not .jsonl")
    if args.planogram and not args.report:
        raise CliError("--planogram needs --report CSV (where the comparison is written beside)")
    if args.report_one_label is not None and not args.report:
        raise CliError("--report-one-label needs --report CSV (it decides what the report counts)")
    if not args.report:
        return None
    if jsonl:
        raise CliError("--report works with a .json --output (one document at the end), not .jsonl")
    check_writable_file(args.report, "--report")
    if not args.planogram:
        return None
    from os2d.report import read_planogram

    check_writable_file(planogram_output(args.report), "--report")
    return read_planogram(args.planogram)


def planogram_output(report: str) -> Path:
    """Where ``--planogram``'s comparison goes: ``REPORT_planogram.csv`` beside ``--report``."""
    p = Path(report)
    return p.with_name(p.stem + "_planogram.csv")


def _write_reports(args: argparse.Namespace, reports: list[tuple[str, Any]], plan: dict | None) -> None:
    """The ``--report`` CSV (one line per facing) and the ``--planogram`` comparison (one line per class and row)."""
    import csv
    import io

    from os2d.files import atomic_write
    from os2d.report import compare_planogram

    def write(path: Path | str, header: list[str], rows: list[list[Any]]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        atomic_write(path, lambda f: f.write(buf.getvalue().encode("utf-8")))

    write(args.report, ["image", "row", "position", "class", "score", "x1", "y1", "x2", "y2"],
          [[image, f.row, f.position, f.label, round(f.score, 4), *(round(v, 1) for v in f.box_xyxy)]
           for image, report in reports for f in report.facings])
    if plan is None:
        return
    lines = []
    for image, report in reports:
        comparison = compare_planogram(report, plan)
        lines += [[image, c["class"], c["row"], c["expected"], c["found"], c["status"]] for c in comparison]
        if not args.quiet:
            status = Counter(c["status"] for c in comparison)
            print(f"{image}: planogram {status['ok']} ok, {status['missing']} missing, {status['extra']} extra, "
                  f"{status['misplaced']} misplaced", file=sys.stderr)
    write(planogram_output(args.report), ["image", "class", "row", "expected", "found", "status"], lines)


PICTURE_SUFFIX = "_os2d.png"
_NAME_BYTES = 200  # longer picture names are cut and given a hash (file systems allow 255 bytes)


def picture_paths(images: list[str], draw_dir: Path) -> dict[str, Path]:
    """Where ``--draw`` puts the picture of each image: ``STEM_os2d.png`` in the image's folder relative to the
    folder shared by all images (so ``d1/x.jpg`` and ``d2/x.jpg`` give ``d1/x_os2d.png`` and ``d2/x_os2d.png``;
    images of one folder stay flat). Two images of one folder with the same stem keep their extension in the
    name (``x.jpg_os2d.png``); a name over 200 bytes is cut and ends in a hash of the image path."""
    import hashlib
    import os
    from collections import Counter

    full = {p: os.path.abspath(p) for p in images}
    try:
        common = os.path.commonpath([os.path.dirname(a) for a in full.values()]) if full else ""
    except ValueError:  # paths on different drives (Windows): one flat folder
        common = ""
    stems = Counter((os.path.dirname(a), Path(a).stem) for a in full.values())
    out = {}
    for p, a in full.items():
        folder = os.path.relpath(os.path.dirname(a), common) if common else ""
        name = Path(a).name if stems[os.path.dirname(a), Path(a).stem] > 1 else Path(a).stem
        if len(os.fsencode(name)) > _NAME_BYTES:
            digest = hashlib.sha256(a.encode()).hexdigest()[:8]
            name = os.fsencode(name)[:_NAME_BYTES].decode("utf-8", "ignore") + "-" + digest
        out[p] = draw_dir / folder / (name + PICTURE_SUFFIX)
    return out


def _counting_score(args: argparse.Namespace, detector: Any) -> float:
    """The score a detection needs to count in ``--report``: ``--score-threshold``, else the score of the weights'
    calibrated confidence threshold (:mod:`os2d.calibration`)."""
    if args.score_threshold is not None:
        return float(args.score_threshold)
    return detector.known_score


def _draw_result(pictures: dict[str, Path] | None, res: Any, report: Any = None,
                 min_confidence: float | None = None) -> None:
    """The picture of one image's detections (those with confidence >= ``min_confidence`` when the weights are
    calibrated), or of its shelf report (rows, positions) with ``--report``."""
    if pictures is None or res.image is None or res.detections is None:
        return
    from os2d.visualize import draw_detections, draw_shelf_report

    target = pictures[res.path]
    target.parent.mkdir(parents=True, exist_ok=True)
    dets = res.detections
    if report is not None:
        draw_shelf_report(res.image, report, dets.class_names).save(target)
        return
    if min_confidence is not None and dets.confidence is not None:
        dets = dets.filter(dets.confidence >= min_confidence)
    draw_detections(res.image, dets).save(target)


def _detect_json(args: argparse.Namespace, detector: Any, images: list[str], output: Path | None,
                 plan: dict | None = None) -> int:
    """Small runs: one JSON document written at the end (the ``version`` 1 contract); ``output`` None: the document
    on stdout (``--output -``) or, without ``--output``, a listing of each image's detections."""
    from tqdm import tqdm

    from os2d.results import write_detections_json
    from os2d.runner import iter_detections

    pictures = picture_paths(images, Path(args.draw)) if args.draw else None
    records, failures, reports = [], 0, []
    results = iter_detections(detector, images, workers=args.workers, depth=args.prefetch,
                              keep_images=pictures is not None)
    listing = args.output is None  # the listing on stdout is the progress then
    bar = tqdm(results, total=len(images), desc="detect", unit="img",
               disable=len(images) < 2 or args.quiet or listing, file=sys.stderr)
    for res in bar:
        records.append(res.record())
        if res.error is not None:
            failures += 1
            print(f"os2d: error: {res.error}", file=sys.stderr)
            continue
        if args.unknown is not None:
            from os2d.unknown import unknown_items

            known = args.unknown if args.unknown >= 0 else detector.known_score
            records[-1]["unknown"] = [u.to_record() for u in unknown_items(res.detections, known)]
        report = None
        if args.report:
            from os2d.report import ONE_LABEL_IOU, shelf_report

            one_label = args.report_one_label
            report = shelf_report(res.detections, min_score=_counting_score(args, detector),
                                  one_label_iou=ONE_LABEL_IOU if one_label is None else
                                  None if one_label == "off" else one_label)
            records[-1]["shelf"] = report.to_dict()
            reports.append((records[-1]["path"], report))
        _draw_result(pictures, res, report, detector.confidence_threshold)
        if listing:
            _print_listing(records[-1], detector.confidence_threshold)
        elif not args.quiet and len(images) == 1 and output is not None:
            for d in records[-1]["detections"][:10]:
                print(_detection_line(d))
    if output is not None:
        write_detections_json(output, detector.classes, records)
    elif args.output == "-":
        import json

        from os2d.results import detections_document

        json.dump(detections_document(detector.classes, records), sys.stdout, indent=1)
        sys.stdout.write("\n")
    if args.report:
        _write_reports(args, reports, plan)
    if not args.quiet and output is not None:
        n = sum(len(r["detections"]) for r in records)
        print(f"wrote {output}: {len(records) - failures} images, {n} detections"
              + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def _detect_jsonl(args: argparse.Namespace, detector: Any, images: list[str], output: Path, shard: Any,
                  class_images: str) -> int:
    """Large runs: one JSON line per image as it finishes; resumable (only by the same run: same model, class
    images and options, compared by content); one file per rank when sharded."""
    from tqdm import tqdm

    from os2d.runner import run_to_jsonl, shard_path

    pictures = picture_paths(images, Path(args.draw)) if args.draw else None
    sharded = shard.world_size > 1
    path = shard_path(output, shard.rank) if sharded else output

    def progress(total: int, skipped: int) -> Any:
        return tqdm(total=total, initial=skipped, desc=f"detect rank {shard.rank}" if sharded else "detect",
                    unit="img", disable=args.quiet, file=sys.stderr, position=shard.local_rank if sharded else None)

    def on_result(res: Any) -> None:
        if res.error is not None:
            tqdm.write(f"os2d: error: {res.error}", file=sys.stderr)
        _draw_result(pictures, res, None, detector.confidence_threshold)

    summary = run_to_jsonl(detector, images, path, weights=str(args.weights), class_images=class_images,
                           resume=args.resume,
                           retry_errors=args.retry_errors, shard=shard, workers=args.workers, depth=args.prefetch,
                           on_result=on_result, progress=progress)
    if not args.quiet:
        rate = f", {summary.images_per_s:.2f} images/s" if summary.processed else ""
        print(f"wrote {path}: {summary.processed} images ({summary.skipped} already done), "
              f"{summary.detections} detections" + (f", {summary.failed} failed" if summary.failed else "") + rate,
              file=sys.stderr)
    if sharded:
        _finish_sharded(output, images, shard, quiet=args.quiet)
    return 1 if summary.failed else 0


def _finish_sharded(output: Path, images: list[str], shard: Any, *, quiet: bool) -> None:
    """Merge the rank files into ``output``: under torchrun rank 0 after a barrier; for ranks started by hand,
    whichever rank finds every shard complete (else say how to merge later)."""
    import os

    from os2d.results import read_jsonl
    from os2d.runner import merge_shards, shard_path

    shards = [shard_path(output, r) for r in range(shard.world_size)]
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        from datetime import timedelta

        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=timedelta(hours=24))  # ranks may finish hours apart
        try:
            dist.barrier()
            if shard.rank == 0:
                summary = merge_shards(shards, output, order=images)
                if not quiet:
                    print(f"merged {len(shards)} shards into {output}: {summary.images} images", file=sys.stderr)
            dist.barrier()  # no rank exits (torchrun stops all on a non-zero exit) before the merge is written
        finally:
            dist.destroy_process_group()
        return
    done: set[str] = set()
    for s in shards:
        if s.is_file():
            done |= set(read_jsonl(s).latest())
    if all(p in done for p in images):
        summary = merge_shards(shards, output, order=images)
        if not quiet:
            print(f"merged {len(shards)} shards into {output}: {summary.images} images", file=sys.stderr)
    elif not quiet:
        print(f"other ranks are not finished: when they are, run `os2d detect --merge --output {output}`",
              file=sys.stderr)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``detect``."""
    p = sub.add_parser("detect", help="detect class images in input images, write JSON or JSON Lines")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--images", dest="image_sources", nargs="+", action="extend", metavar="DIR|GLOB|LIST",
                   help="folders (searched recursively), glob patterns, .txt lists of paths, or image files")
    p.add_argument("--images-from", metavar="FILE", help="text file with one image path per line")
    add_class_args(p, what="what to detect")
    p.add_argument("--negative", action="append", metavar="NAME=PATH",
                   help="a picture of what class NAME must not be (the neighbouring flavour, a competitor's logo; "
                        "repeat): its detections that the negative matches at least as well are dropped")
    p.add_argument("--save-gallery", metavar="FILE", help="save the class gallery for reuse")
    add_output_file(p, metavar="OUT.json|OUT.jsonl|-", deprecated=("--out",), required=False,
                    help="OUT.json: one document at the end; OUT.jsonl: one line per image as it finishes "
                         "(resumable; under torchrun one OUT.rankR.jsonl per rank, merged at the end); '-': the "
                         "JSON document on stdout. Without it: each image's confident detections listed on stdout")
    p.add_argument("--draw", metavar="DIR", help="write pictures of the detections in this folder (with calibrated "
                                                 "weights: those at or above the default confidence threshold)")
    p.add_argument("--report", metavar="CSV", help="shelf report: one line per facing (image, shelf row, position, "
                                                   "class, score, box) of the detections above --score-threshold "
                                                   "(default: the weights' calibrated confidence threshold); "
                                                   "also a 'shelf' entry per image in the JSON and, with --draw, "
                                                   "pictures of the rows")
    p.add_argument("--report-one-label", type=_one_label_iou, default=None, metavar="IOU|off",
                   help="with --report: counted detections of different classes overlapping with IoU >= IOU are one "
                        "facing, the best-scoring one (default: os2d.report.ONE_LABEL_IOU, 0.5; 'off' counts them "
                        "all)")
    p.add_argument("--planogram", metavar="CSV", help="with --report: expected 'class,row,facings'; the comparison "
                                                      "(ok, missing, extra, misplaced) goes to REPORT_planogram.csv")
    p.add_argument("--unknown", nargs="?", type=float, const=-1.0, default=None, metavar="SCORE",
                   help="also list 'unknown' items per image: product-sized boxes that match no class well enough "
                        "(what is missing from the gallery); a detection is known from SCORE (default: the "
                        "weights' calibrated threshold)")
    add_quiet(p)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="OUT.jsonl: skip images already in the file (default); --no-resume starts it afresh")
    p.add_argument("--retry-errors", action="store_true", help="with --resume: run failed images again")
    p.add_argument("--merge", action="store_true",
                   help="only merge the rank files OUT.rank*.jsonl of a sharded run into OUT.jsonl")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="threads decoding and resizing the next images during detection (0 = no overlap)")
    p.add_argument("--prefetch", type=int, default=4, metavar="N", help="images decoded ahead at most")
    add_model_args(p)
    add_inference_args(p, shortlist=True,
                       image_size_help="auto (default): per image and class, the level where objects have the "
                                       "size the model expects; N: resize so sqrt(w*h) = N at pyramid scale 1; "
                                       "0: keep the image size")
    p.set_defaults(func=cmd_detect)


__all__ = ["add_parser", "cmd_detect"]
