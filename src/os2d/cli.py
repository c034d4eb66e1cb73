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
    try:
        return InferenceConfig(**changes)
    except ValueError as e:
        raise CliError(str(e)) from e


def cmd_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from os2d.detector import Detector
    from os2d.io import ImageError, load_image

    images = list(args.images)
    if args.images_from:
        images += read_image_list(args.images_from)
    if not images:
        raise CliError("no input images (give IMAGE paths or --images-from FILE)")
    classes: list[tuple[str, str]] = [_parse_class_arg(c) for c in args.class_args or []]
    if args.classes:
        classes += read_classes_csv(args.classes)
    if not classes and not args.gallery:
        raise CliError("no classes: give --class NAME=PATH, --classes CSV or --gallery FILE")

    detector = Detector.from_weights(args.weights, device=args.device, config=_inference_config(args))
    register_classes(detector, classes, gallery=args.gallery)
    if args.save_gallery:
        detector.save_gallery(args.save_gallery)

    draw_dir = Path(args.draw) if args.draw else None
    records, failures = [], 0
    bar = tqdm(images, desc="detect", unit="img", disable=len(images) < 2 or args.quiet, file=sys.stderr)
    for path in bar:
        try:
            img = load_image(path)
            dets = detector.detect(img)
        except ImageError as e:
            failures += 1
            print(f"os2d: error: {e}", file=sys.stderr)
            records.append({"path": str(path), "error": str(e), "detections": []})
            continue
        records.append({"path": str(path), "width": img.width, "height": img.height, "detections": dets.to_list()})
        if draw_dir is not None:
            from os2d.visualize import draw_detections

            draw_dir.mkdir(parents=True, exist_ok=True)
            draw_detections(img, dets).save(draw_dir / (Path(path).stem + "_os2d.png"))
        if not args.quiet and len(images) == 1:
            for d in dets.to_list()[:10]:
                print(f"{d['label']:>20s} {d['score']:.3f} {d['box_xyxy']}")
    payload = {"version": OUTPUT_VERSION, "classes": detector.classes, "images": records}
    atomic_json_dump(args.output, payload)
    if not args.quiet:
        n = sum(len(r["detections"]) for r in records)
        print(f"wrote {args.output}: {len(records) - failures} images, {n} detections"
              + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from os2d.demo import run_demo

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

        from os2d.service.app import ServiceSettings, create_app, default_data_dir
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

    p = sub.add_parser("detect", help="detect class images in input images, write JSON")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--images-from", metavar="FILE", help="text file with one image path per line")
    p.add_argument("--class", dest="class_args", action="append", metavar="NAME=PATH",
                   help="a class image (repeat; repeat a NAME for several images of one class)")
    p.add_argument("--classes", metavar="CSV", help="CSV with header name,path")
    p.add_argument("--gallery", metavar="FILE", help="load a saved class gallery")
    p.add_argument("--save-gallery", metavar="FILE", help="save the class gallery for reuse")
    p.add_argument("--output", "-o", required=True, metavar="OUT.json")
    p.add_argument("--draw", metavar="DIR", help="write pictures of the detections here")
    p.add_argument("--quiet", "-q", action="store_true")
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

    from os2d import cli_weights

    cli_weights.register(sub)
    __import__("os2d.cli_train").cli_train.add_parser(sub)  # os2d train, os2d plot-log
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
