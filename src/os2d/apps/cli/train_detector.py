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

from os2d.apps.cli.common import CliError, check_writable_dir
from os2d.apps.cli.head_training import add_head_training_args, head_run_config


def cmd_train_detector(args: argparse.Namespace) -> int:
    from os2d.agnostic.config import DetectorTrainConfig
    from os2d.train.detector_head import CHECKPOINT, run_training

    config = head_run_config(args, DetectorTrainConfig, CHECKPOINT)
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
    add_head_training_args(p, run_files="cache/, checkpoint.pt, detector.pt")
    p.set_defaults(func=cmd_train_detector)


__all__ = ["add_parser", "cmd_train_detector"]
