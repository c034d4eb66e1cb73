"""``os2d train-detector``: the class-agnostic detector of the detector + retrieval baseline.

    os2d train-detector --config recipes/detector_retrieval/detector.yaml --output-dir runs/agnostic
    os2d train-detector --resume runs/agnostic epochs=40      # continue (config from the checkpoint)

Features of the frozen trunk are cached once per training image (float16, ``<output-dir>/cache``), then only
the head trains; the run writes ``checkpoint.pt`` after every epoch and ``detector.pt`` (head + retrieval
config + whitening, float16) at the end, for ``os2d eval --method detector-retrieval --detector``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from os2d.apps.cli.common import CliError, add_output_dir, add_quiet, check_writable_dir


def cmd_train_detector(args: argparse.Namespace) -> int:
    from os2d.train.detector_head import (
        CHECKPOINT,
        config_from_checkpoint,
        load_detector_train_config,
        run_training,
    )

    overrides = list(args.overrides)
    try:
        if args.config is not None:
            config = load_detector_train_config(args.config, overrides)
        elif args.resume is not None:
            ckpt = Path(args.resume) / CHECKPOINT if Path(args.resume).is_dir() else Path(args.resume)
            if not ckpt.is_file():
                raise CliError(f"--resume: no checkpoint at {ckpt}")
            config = config_from_checkpoint(ckpt, overrides)
            if args.output_dir is None:
                config = config.replace(output_dir=str(ckpt.parent))
        else:
            raise CliError("give --config CONFIG.yaml (or --resume RUN_DIR to continue a run)")
    except ValueError as e:  # config validation: the user's file or KEY=VALUE override
        raise CliError(str(e)) from e
    if args.output_dir is not None:
        config = config.replace(output_dir=args.output_dir)
    if not config.output_dir:
        raise CliError("no run folder: give --output-dir (or output_dir in the config)")
    if not config.box_csvs:
        raise CliError("no training boxes: set box_csvs in the config")
    for path in config.box_csvs:
        if not Path(path).is_file():
            raise CliError(f"box_csvs: file not found: {path}")
    check_writable_dir(config.output_dir, "--output-dir")
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"os2d train-detector: {config.epochs} epochs on the trunk of {config.weights!r} -> {config.output_dir}")
    try:
        path = run_training(config, log=say)
    except ValueError as e:
        raise CliError(str(e)) from e
    if not args.quiet:
        print(f"detector weights: {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``train-detector``."""
    p = sub.add_parser("train-detector", help="train the class-agnostic detector of the detector + retrieval "
                                              "baseline on cached trunk features (resumable)",
                       description="Train from a YAML config (os2d.agnostic.config.DetectorTrainConfig); "
                                   "KEY=VALUE arguments override config entries (epochs=40 head.hidden_channels=64).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", default=None, metavar="CONFIG.yaml", help="training config")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="run folder or its checkpoint.pt: continue (cached features and epochs are reused)")
    add_output_dir(p, required=False, help="run folder (overrides output_dir): cache/, checkpoint.pt, detector.pt")
    add_quiet(p)
    p.set_defaults(func=cmd_train_detector)


__all__ = ["add_parser", "cmd_train_detector"]
