"""``os2d synth``: synthetic one-shot detection data from class images and background photos."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from os2d.apps.cli.main import CliError

_GENERATED = ("images", "class_images")
_GENERATED_FILES = ("annotations.csv", "class_images.csv", "synth_config.json", "preview.jpg")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless it is an earlier ``os2d synth`` output and --overwrite."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise CliError(f"--out {out} is not empty; pass --overwrite to replace an earlier os2d synth output")
    if not (out / "synth_config.json").is_file():
        raise CliError(f"--out {out} is not empty and holds no synth_config.json: not an os2d synth output, "
                       f"refusing to delete anything there")
    for name in _GENERATED:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in _GENERATED_FILES:
        (out / name).unlink(missing_ok=True)


def cmd_synth(args: argparse.Namespace) -> int:
    from os2d.synth import SynthConfig, generate_dataset

    try:
        overrides = json.loads(args.config_json) if args.config_json else {}
        if not isinstance(overrides, dict):
            raise ValueError("--config-json must be a JSON object")
        config = SynthConfig.from_dict({"image_size": args.image_size, "shelf_prob": args.shelf_prob, **overrides})
    except (ValueError, TypeError) as e:
        raise CliError(f"bad synth settings: {e}") from e
    out = Path(args.out)
    _prepare_out(out, args.overwrite)
    progress = not args.quiet and sys.stderr.isatty()
    summary = generate_dataset(args.class_images, args.backgrounds, out, num_images=args.num_images, config=config,
                               seed=args.seed, max_classes=args.max_classes, preview=args.preview, progress=progress)
    if not args.quiet:
        print(f"wrote {summary['images']} images with {summary['boxes']} boxes ({summary['difficult']} difficult) of "
              f"{summary['classes']} classes to {out}: annotations.csv, class_images.csv"
              + (", preview.jpg" if args.preview else ""))
        print(f"evaluate with: os2d eval --boxes {out / 'annotations.csv'} --classes {out / 'class_images.csv'} "
              f"--out DIR")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--image-size", type=int, default=1024, help="longer side of the generated images (px)")
    p.add_argument("--shelf-prob", type=float, default=0.6, help="share of shelf scenes (the rest: scattered)")
    p.add_argument("--max-classes", type=int, default=None, help="use only the first N classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", type=int, default=6, metavar="N", help="samples in preview.jpg (0 = none)")
    p.add_argument("--config-json", metavar="JSON", help='other SynthConfig fields, e.g. \'{"facings": [2, 6]}\'')
    p.add_argument("--overwrite", action="store_true", help="replace an earlier os2d synth output in --out")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_synth)
