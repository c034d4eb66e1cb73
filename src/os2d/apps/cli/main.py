"""The ``os2d`` command line. Only calls the public API; prints, the library logs."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from os2d.files import atomic_json_dump

OUTPUT_VERSION = 1


class CliError(Exception):
    """A user error: printed as ``os2d: error: ...`` with exit code 2, never as a traceback."""


def _parse_class_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise CliError(f"--class expects NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    if not name.strip() or not path.strip():
        raise CliError(f"--class expects NAME=PATH, got {text!r}")
    return name.strip(), path.strip()


def read_classes_csv(path: str | Path) -> list[tuple[str, str]]:
    """CSV with header ``name,path`` (relative paths are relative to the CSV); one row per class image.

    Several rows with the same name give several class images of that class (few-shot).
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f"classes CSV not found: {path}")
    rows: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "name" not in header or "path" not in header:
            raise CliError(f"{path}: header must have columns 'name' and 'path', got {header}")
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            name, p = row.get("name", ""), row.get("path", "")
            if not name or not p:
                raise CliError(f"{path}, row {i}: empty name or path")
            full = Path(p) if Path(p).is_absolute() else path.parent / p
            rows.append((name, str(full)))
    if not rows:
        raise CliError(f"{path}: no classes")
    return rows


def read_image_list(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CliError(f"image list not found: {path}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln if Path(ln).is_absolute() else str(path.parent / ln) for ln in lines if ln and not ln.startswith("#")]


def register_classes(detector, classes: list[tuple[str, Any]], *, gallery: str | None = None) -> None:
    """Load a saved gallery (optional), then add (name, image) classes; bad class images become CliError."""
    from os2d.io import ImageError

    if gallery:
        detector.load_gallery(gallery)
    for name, image in classes:
        try:
            detector.add_class(name, image)
        except ImageError as e:
            raise CliError(f"class {name!r}: {e}") from e


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="default", help="weights name (see `os2d weights list`) or checkpoint path")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize input so sqrt(w*h) = this at pyramid scale 1 (default 1024; 0 = keep size)")
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="pyramid scales (default 1.0; reference: 0.5 0.625 0.8 1 1.2 1.4 1.6)")
    p.add_argument("--score-threshold", type=float, default=None, help="drop detections scoring below this")
    p.add_argument("--max-detections", type=int, default=None, help="per image after NMS (default 100)")
    p.add_argument("--nms-iou", type=float, default=None, help="per-class NMS IoU threshold (default 0.3)")
    p.add_argument("--rotations", action="store_true", help="add 90/180/270-degree rotated class views")
    p.add_argument("--hflip", action="store_true", help="add horizontally flipped class views")


def _inference_config(args: argparse.Namespace):
    from os2d.config import InferenceConfig

    changes: dict[str, Any] = {"rotations": args.rotations, "horizontal_flip": args.hflip}
    if args.image_size is not None:
        changes["image_size"] = None if args.image_size == 0 else args.image_size
    if args.scales:
        changes["scales"] = tuple(args.scales)
    if args.score_threshold is not None:
        changes["score_threshold"] = args.score_threshold
    if args.max_detections is not None:
        changes["max_detections"] = args.max_detections
    if args.nms_iou is not None:
        changes["nms_iou_threshold"] = args.nms_iou
    if getattr(args, "shortlist", None) is not None:
        changes["shortlist_top_k"] = args.shortlist
    try:
        return InferenceConfig(**changes)
    except ValueError as e:
        raise CliError(str(e)) from e


def cmd_detect(args: argparse.Namespace) -> int:
    from os2d.runner import Shard, discover_images, find_shards, merge_shards

    output = Path(args.output)
    jsonl = output.suffix.lower() == ".jsonl"
    try:
        images = discover_images(list(args.images) + list(args.image_sources or []))
    except ValueError as e:
        raise CliError(str(e)) from e
    if args.images_from:
        images += read_image_list(args.images_from)
    if args.merge:
        if not jsonl:
            raise CliError("--merge combines the shard files of a .jsonl output: give --output NAME.jsonl")
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
    classes: list[tuple[str, str]] = [_parse_class_arg(c) for c in args.class_args or []]
    if args.classes:
        classes += read_classes_csv(args.classes)
    if not classes and not args.gallery:
        raise CliError("no classes: give --class NAME=PATH, --classes CSV or --gallery FILE")
    shard = Shard.from_env()
    if shard.world_size > 1 and not jsonl:
        raise CliError(f"a sharded run (WORLD_SIZE={shard.world_size}) writes JSON Lines: give --output NAME.jsonl")
    if args.workers < 0 or args.prefetch < 1:
        raise CliError("--workers must be >= 0 and --prefetch >= 1")

    from os2d.detector import Detector

    detector = Detector.from_weights(args.weights, device=shard.device(args.device), config=_inference_config(args))
    register_classes(detector, classes, gallery=args.gallery)
    if args.save_gallery and shard.rank == 0:
        detector.save_gallery(args.save_gallery)
    if jsonl:
        return _detect_jsonl(args, detector, images, output, shard)
    return _detect_json(args, detector, images, output)


def _draw_result(draw_dir: Path | None, res: Any) -> None:
    if draw_dir is None or res.image is None or res.detections is None:
        return
    from os2d.visualize import draw_detections

    draw_dir.mkdir(parents=True, exist_ok=True)
    draw_detections(res.image, res.detections).save(draw_dir / (Path(res.path).stem + "_os2d.png"))


def _detect_json(args: argparse.Namespace, detector: Any, images: list[str], output: Path) -> int:
    """Small runs: one JSON document written at the end (the ``version`` 1 contract)."""
    from tqdm import tqdm

    from os2d.runner import iter_detections

    draw_dir = Path(args.draw) if args.draw else None
    records, failures = [], 0
    results = iter_detections(detector, images, workers=args.workers, depth=args.prefetch,
                              keep_images=draw_dir is not None)
    bar = tqdm(results, total=len(images), desc="detect", unit="img", disable=len(images) < 2 or args.quiet,
               file=sys.stderr)
    for res in bar:
        records.append(res.record())
        if res.error is not None:
            failures += 1
            print(f"os2d: error: {res.error}", file=sys.stderr)
            continue
        _draw_result(draw_dir, res)
        if not args.quiet and len(images) == 1:
            for d in records[-1]["detections"][:10]:
                print(f"{d['label']:>20s} {d['score']:.3f} {d['box_xyxy']}")
    payload = {"version": OUTPUT_VERSION, "classes": detector.classes, "images": records}
    atomic_json_dump(output, payload)
    if not args.quiet:
        n = sum(len(r["detections"]) for r in records)
        print(f"wrote {output}: {len(records) - failures} images, {n} detections"
              + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def _detect_jsonl(args: argparse.Namespace, detector: Any, images: list[str], output: Path, shard: Any) -> int:
    """Large runs: one JSON line per image as it finishes; resumable; one file per rank when sharded."""
    from tqdm import tqdm

    from os2d.runner import run_to_jsonl, shard_path

    draw_dir = Path(args.draw) if args.draw else None
    sharded = shard.world_size > 1
    path = shard_path(output, shard.rank) if sharded else output

    def progress(total: int, skipped: int) -> Any:
        return tqdm(total=total, initial=skipped, desc=f"detect rank {shard.rank}" if sharded else "detect",
                    unit="img", disable=args.quiet, file=sys.stderr, position=shard.local_rank if sharded else None)

    def on_result(res: Any) -> None:
        if res.error is not None:
            tqdm.write(f"os2d: error: {res.error}", file=sys.stderr)
        _draw_result(draw_dir, res)

    summary = run_to_jsonl(detector, images, path, weights=str(args.weights), resume=args.resume,
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

    from os2d.runner import merge_shards, read_jsonl, shard_path

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


def cmd_demo(args: argparse.Namespace) -> int:
    from os2d.apps.demo import run_demo

    summary = run_demo(Path(args.output), weights=args.weights, device=args.device)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    payload = json.loads(Path(summary["files"]["detections_json"]).read_text())
    dets = payload["images"][0]["detections"]
    print(f"os2d demo: a generated shelf ({payload['images'][0]['width']}x{payload['images'][0]['height']}) "
          f"with {summary['num_instances']} planted products of {len(summary['classes'])} classes "
          f"({', '.join(summary['classes'])}), weights {args.weights!r}")
    print(f"found in {summary['seconds']['detect']:.1f} s; top detections:")
    for d in dets[:10]:
        x1, y1, x2, y2 = d["box_xyxy"]
        print(f"  {d['label']:<10} score {d['score']:.3f}  box [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    for name, r in summary["recall"].items():
        print(f"  {name:<10} {r['found']}/{r['instances']} planted instances among its top {r['instances']} "
              f"detections (IoU >= 0.5)")
    for key, label in (("detections_png", "picture"), ("detections_json", "JSON"), ("scene", "input")):
        print(f"{label}: {summary['files'][key]}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from os2d.apps.service.app import ServiceSettings, create_app, default_data_dir
    except ImportError as e:
        raise CliError(f"`os2d serve` needs the serve extra: pip install 'os2d[serve]' ({e})") from e
    try:
        settings = ServiceSettings(
            weights=args.weights, data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
            token=args.token or os.environ.get("OS2D_TOKEN") or None, max_upload_mb=args.max_upload_mb,
            max_pixels=args.max_pixels, queue_size=args.workers_queue, timeout_s=args.timeout, device=args.device,
            torch_threads=args.threads)
    except ValueError as e:
        raise CliError(str(e)) from e
    app = create_app(settings)
    print(f"os2d serve: http://{args.host}:{args.port}/ (API docs at /docs), data in {settings.data_dir}"
          + (", write endpoints need the token" if settings.token else ""), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="os2d", description="One-shot object detection (OS2D).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="detect class images in input images, write JSON or JSON Lines")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--images", dest="image_sources", nargs="+", action="extend", metavar="DIR|GLOB|LIST",
                   help="folders (searched recursively), glob patterns, .txt lists of paths, or image files")
    p.add_argument("--images-from", metavar="FILE", help="text file with one image path per line")
    p.add_argument("--class", dest="class_args", action="append", metavar="NAME=PATH",
                   help="a class image (repeat; repeat a NAME for several images of one class)")
    p.add_argument("--classes", metavar="CSV", help="CSV with header name,path")
    p.add_argument("--gallery", metavar="FILE", help="load a saved class gallery")
    p.add_argument("--save-gallery", metavar="FILE", help="save the class gallery for reuse")
    p.add_argument("--output", "--out", "-o", required=True, metavar="OUT.json|OUT.jsonl",
                   help="OUT.json: one document at the end; OUT.jsonl: one line per image as it finishes "
                        "(resumable; under torchrun one OUT.rankR.jsonl per rank, merged at the end)")
    p.add_argument("--draw", metavar="DIR", help="write pictures of the detections here")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="OUT.jsonl: skip images already in the file (default); --no-resume starts it afresh")
    p.add_argument("--retry-errors", action="store_true", help="with --resume: run failed images again")
    p.add_argument("--merge", action="store_true",
                   help="only merge the rank files OUT.rank*.jsonl of a sharded run into OUT.jsonl")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="threads decoding and resizing the next images during detection (0 = no overlap)")
    p.add_argument("--prefetch", type=int, default=4, metavar="N", help="images decoded ahead at most")
    p.add_argument("--shortlist", type=int, default=None, metavar="K",
                   help="run the full heads only for the K classes ranked best per image by a cheap "
                        "pooled-feature match (for large galleries; default: all classes)")
    _add_inference_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("demo", help="run on a built-in scene (no files needed), write pictures")
    p.add_argument("--output", default="os2d-demo", metavar="DIR")
    p.add_argument("--weights", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the HTTP service (JSON API + web page); needs os2d[serve]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--weights", default="default", help="weights name or checkpoint path")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="gallery storage (default $OS2D_DATA or ~/.local/share/os2d)")
    p.add_argument("--token", default=None, help="token required by write endpoints (default $OS2D_TOKEN)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload per file")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest accepted image (pixels)")
    p.add_argument("--workers-queue", type=int, default=4, metavar="N",
                   help="requests queued for the inference worker; more get 503")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request timeout (503 after)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.set_defaults(func=cmd_serve)

    from os2d.apps.cli import eval as cli_eval
    from os2d.apps.cli import pretrain as cli_pretrain
    from os2d.apps.cli import synth as cli_synth
    from os2d.apps.cli import train as cli_train
    from os2d.apps.cli import weights as cli_weights

    cli_weights.register(sub)
    cli_eval.add_parser(sub)  # os2d eval, os2d dataset-stats
    cli_pretrain.add_parser(sub)  # os2d pretrain-transform
    cli_synth.add_parser(sub)  # os2d synth
    cli_train.add_parser(sub)  # os2d train, os2d plot-log
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from os2d.io import ImageError
    from os2d.weights import WeightsError

    try:
        return int(args.func(args))
    except (CliError, ImageError, WeightsError, FileNotFoundError, ValueError) as e:
        print(f"os2d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("os2d: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `os2d weights list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
