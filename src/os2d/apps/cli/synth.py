"""``os2d synth``: synthetic one-shot detection data from class images and background photos."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from os2d.apps.cli.common import CliError, add_output_dir, add_quiet, check_writable_dir

_GENERATED = ("images", "class_images")
_GENERATED_FILES = ("annotations.csv", "class_images.csv", "synth_config.json", "preview.jpg")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless it is an earlier ``os2d synth`` output and --overwrite."""
    check_writable_dir(out, "--output-dir")
    if not out.exists():
        return
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise CliError(f"--output-dir {out} is not empty; pass --overwrite to replace an earlier os2d synth output")
    if not (out / "synth_config.json").is_file():
        raise CliError(f"--output-dir {out} is not empty and holds no synth_config.json: not an os2d synth output, "
                       f"refusing to delete anything there")
    for name in _GENERATED:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in _GENERATED_FILES:
        (out / name).unlink(missing_ok=True)


def _check_sources(args: argparse.Namespace) -> None:
    """The class images and backgrounds can be listed and the counts are positive (before any output)."""
    from os2d.synth.sources import class_image_list, list_images

    if args.num_images < 1:
        raise CliError(f"--num-images must be >= 1, got {args.num_images}")
    if args.max_classes is not None and args.max_classes < 1:
        raise CliError(f"--max-classes must be >= 1, got {args.max_classes}")
    try:  # the listing functions raise a plain ValueError for a missing or empty folder, a bad CSV
        class_image_list(args.class_images)
        list_images(args.backgrounds, "background photo")
    except ValueError as e:
        raise CliError(str(e)) from e


def cmd_synth(args: argparse.Namespace) -> int:
    from os2d.synth import SynthConfig, generate_dataset

    try:
        overrides = json.loads(args.config_json) if args.config_json else {}
        if not isinstance(overrides, dict):
            raise ValueError("--config-json must be a JSON object")
        config = SynthConfig.from_dict({"image_size": args.image_size, "shelf_prob": args.shelf_prob, **overrides})
    except (ValueError, TypeError) as e:
        raise CliError(f"bad synth settings: {e}") from e
    _check_sources(args)
    out = Path(args.output_dir)
    _prepare_out(out, args.overwrite)
    progress = not args.quiet and sys.stderr.isatty()
    summary = generate_dataset(args.class_images, args.backgrounds, out, num_images=args.num_images, config=config,
                               seed=args.seed, max_classes=args.max_classes, preview=args.preview, progress=progress)
    if not args.quiet:
        print(f"wrote {summary['images']} images with {summary['boxes']} boxes ({summary['difficult']} difficult) of "
              f"{summary['classes']} classes to {out}: annotations.csv, class_images.csv"
              + (", preview.jpg" if args.preview else ""))
        print(f"evaluate with: os2d eval --boxes {out / 'annotations.csv'} --classes {out / 'class_images.csv'} "
              f"--output-dir DIR")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``synth`` on the ``os2d`` sub-command parser."""
    p = sub.add_parser(
        "synth", help="generate synthetic one-shot detection data (shelves of class images on real photos)",
        description="Composite class images (products, logos) onto real background photos: dense shelf rows of "
                    "facings with look-alike distractors, or scattered objects; random scale, perspective "
                    "(yaw/pitch/roll), flips, blur, noise, lighting, colour and occlusion. Writes images/, "
                    "annotations.csv (image,class,x1,y1,x2,y2,difficult), class_images.csv (name,path) and "
                    "preview.jpg. Deterministic for a given --seed.")
    p.add_argument("--class-images", required=True, metavar="DIR|CSV",
                   help="folder of class images (class name = file stem) or a name,path CSV")
    p.add_argument("--backgrounds", required=True, metavar="DIR", help="folder of real photos (recursive)")
    add_output_dir(p, deprecated=("--out",), help="dataset folder: images/, annotations.csv, class_images.csv")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--image-size", type=int, default=1024, help="longer side of the generated images (px)")
    p.add_argument("--shelf-prob", type=float, default=0.6, help="share of shelf scenes (the rest: scattered)")
    p.add_argument("--max-classes", type=int, default=None, help="use only the first N classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", type=int, default=6, metavar="N", help="samples in preview.jpg (0 = none)")
    p.add_argument("--config-json", metavar="JSON", help='other SynthConfig fields, e.g. \'{"facings": [2, 6]}\'')
    p.add_argument("--overwrite", action="store_true", help="replace an earlier os2d synth output in --output-dir")
    add_quiet(p)
    p.set_defaults(func=cmd_synth)
