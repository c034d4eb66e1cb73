"""``os2d demo``: detect the products of a generated shelf scene (no files needed), write pictures and JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from os2d.apps.cli.common import (
    add_model_args,
    add_output_dir,
    add_quiet,
    check_writable_dir,
    device_from_args,
)


def cmd_demo(args: argparse.Namespace) -> int:
    from os2d.apps.demo.run import run_demo

    check_writable_dir(args.output_dir, "--output-dir")
    summary = run_demo(Path(args.output_dir), weights=args.weights, device=str(device_from_args(args.device)))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    if args.quiet:
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


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``demo``."""
    p = sub.add_parser("demo", help="run on a built-in scene (no files needed), write pictures")
    add_output_dir(p, required=False, default="os2d-demo", deprecated=("--output",),
                   help="folder for the scene, the picture of the detections and their JSON (default os2d-demo)")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet(p)
    p.set_defaults(func=cmd_demo)


__all__ = ["add_parser", "cmd_demo"]
