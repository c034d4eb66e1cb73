"""``os2d pretrain-transform``: pretrain the TransformNet on random affine warps of unlabeled photos."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from os2d.apps.cli.common import CliError, add_output_dir, add_quiet, check_writable_dir

# Defaults shown in --help, mirrored from PretrainConfig without importing torch at parser-build time.
PRETRAIN_DEFAULTS = {"num_pairs": 6000, "eval_pairs": 400, "warps_per_crop": 2, "epochs": 6, "batch_size": 32,
                     "lr": 5e-4, "canvas_size": 352, "min_scale": 0.65, "max_scale": 1.5, "max_rotation": 15.0}


def split_held_out(photos: list[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic split by a hash of each photo's path relative to ``root``: (train, held_out)."""
    train, held = [], []
    for p in photos:
        h = int(hashlib.sha1(str(p.relative_to(root)).encode()).hexdigest()[:8], 16) / 16**8
        (held if h < fraction else train).append(p)
    return train, held


def _list_photos(folder: Path) -> list[Path]:
    from os2d.pretrain import list_photos

    try:
        return list_photos(folder)
    except ValueError as e:  # a missing or empty folder
        raise CliError(str(e)) from e


def cmd_pretrain_transform(args: argparse.Namespace) -> int:
    import torch

    from os2d.pretrain import PretrainConfig, WarpConfig, pretrain_transform
    from os2d.weights import load_model

    check_writable_dir(args.output_dir, "--output-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.images).expanduser().resolve()
    photos = _list_photos(root)
    if args.eval_images:
        train, held = photos, _list_photos(Path(args.eval_images).expanduser().resolve())
        overlap = set(train) & set(held)
        if overlap:
            raise CliError(f"--eval-images shares {len(overlap)} photos with --images; held-out photos must differ")
    else:
        if not 0 < args.eval_fraction < 1:
            raise CliError("--eval-fraction must be in (0, 1)")
        train, held = split_held_out(photos, root, args.eval_fraction)
    if len(train) < 2 or (args.eval_pairs > 0 and len(held) < 2):
        raise CliError(f"need at least 2 training and 2 held-out photos, got {len(train)} and {len(held)}")
    try:
        warp = WarpConfig(scale_range=(args.min_scale, args.max_scale), max_rotation_deg=args.max_rotation)
        config = PretrainConfig(warp=warp, canvas_size=args.canvas_size, num_pairs=args.num_pairs,
                                eval_pairs=args.eval_pairs, warps_per_crop=args.warps_per_crop, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    except ValueError as e:
        raise CliError(str(e)) from e
    model = load_model(args.weights)
    progress = not args.quiet and sys.stderr.isatty()
    if not args.quiet:
        print(f"os2d pretrain-transform: {model.config.backbone} backbone (frozen), {len(train)} training photos, "
              f"{len(held)} held-out photos, output in {args.output_dir}", file=sys.stderr)
    summary = pretrain_transform(model, train, held, config, args.output_dir, progress=progress,
                                 echo=lambda line: None if args.quiet else print(line, file=sys.stderr, flush=True))
    out = Path(args.output_dir)
    print(f"wrote {out / 'transform_net.pt'} (TransformNet init for training), {out / 'model.pt'} (full model: "
          f"--weights {out / 'model.pt'}), {out / 'eval.json'}")
    if "table" in summary:
        print(f"held-out alignment error ({summary['eval_pairs']} warps of {len(held)} photos):")
        print(summary["table"])
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``pretrain-transform`` on the ``os2d`` sub-command parser."""
    p = sub.add_parser(
        "pretrain-transform",
        help="pretrain the TransformNet on random affine warps of unlabeled photos (no weakalign needed)",
        description="Strongly supervised TransformNet pretraining (CNNGeometric recipe): a crop of a real photo is "
                    "the class image, a randomly warped copy of the photo the input; the frozen backbone's "
                    "correlation goes through the TransformNet, trained with the grid loss against the true warp. "
                    "Writes transform_net.pt, model.pt and eval.json (held-out alignment error: identity vs "
                    "pretrained). Re-running with the same --output-dir resumes.")
    p.add_argument("--images", required=True, metavar="DIR", help="unlabeled photos (searched recursively)")
    p.add_argument("--eval-images", metavar="DIR", help="held-out photos (default: --eval-fraction of --images)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share of --images (hash split)")
    add_output_dir(p, deprecated=("--out",), help="run folder (cache, checkpoint, outputs)")
    p.add_argument("--weights", default="default", help="starting model: its backbone is used frozen")
    p.add_argument("--num-pairs", type=int, default=PRETRAIN_DEFAULTS["num_pairs"], help="training warps")
    p.add_argument("--eval-pairs", type=int, default=PRETRAIN_DEFAULTS["eval_pairs"], help="held-out warps")
    p.add_argument("--warps-per-crop", type=int, default=PRETRAIN_DEFAULTS["warps_per_crop"])
    p.add_argument("--epochs", type=int, default=PRETRAIN_DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=PRETRAIN_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=PRETRAIN_DEFAULTS["lr"])
    p.add_argument("--canvas-size", type=int, default=PRETRAIN_DEFAULTS["canvas_size"], help="input canvas side (px)")
    p.add_argument("--min-scale", type=float, default=PRETRAIN_DEFAULTS["min_scale"], help="smallest object scale (1 = anchor area)")
    p.add_argument("--max-scale", type=float, default=PRETRAIN_DEFAULTS["max_scale"], help="largest object scale")
    p.add_argument("--max-rotation", type=float, default=PRETRAIN_DEFAULTS["max_rotation"], help="largest rotation, degrees")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 is fastest on busy CPUs)")
    add_quiet(p, deprecated=("--no-progress",))
    p.set_defaults(func=cmd_pretrain_transform)
