"""``os2d train-coae``: the CoAE baseline's head (co-attention, co-excitation, ranking) on the class-agnostic
detector's proposals.

    os2d train-coae --config recipes/coae/coae.yaml --output-dir runs/coae
    os2d train-coae --resume runs/coae steps=6000      # continue (config from the checkpoint)

Features of the frozen trunk are cached once per training image (float16, ``<output-dir>/cache``), then only the
head trains; the run writes ``checkpoint.pt`` every ``checkpoint_every`` steps and ``coae.pt`` at the end, for
``os2d eval --method coae --coae FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from os2d.apps.cli.common import CliError, check_writable_dir
from os2d.apps.cli.head_training import add_head_training_args, head_run_config


def cmd_train_coae(args: argparse.Namespace) -> int:
    from os2d.coae.config import CoaeTrainConfig
    from os2d.train.coae import CHECKPOINT, run_coae_training

    config = head_run_config(args, CoaeTrainConfig, CHECKPOINT)
    if not config.box_csvs:
        raise CliError("no training boxes: set box_csvs and class_csvs in the config")
    for path in (*config.box_csvs, *config.class_csvs, *([config.detector] if config.detector else [])):
        if not Path(path).is_file():
            raise CliError(f"file not found: {path}")
    check_writable_dir(config.output_dir, "--output-dir")
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"os2d train-coae: {config.steps} steps on the trunk of {config.weights!r} -> {config.output_dir}")
    try:
        path = run_coae_training(config, log=say)
    except ValueError as e:
        raise CliError(str(e)) from e
    if not args.quiet:
        print(f"CoAE weights: {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``train-coae``."""
    p = sub.add_parser("train-coae", help="train the CoAE baseline's head on the class-agnostic detector's proposals "
                                          "(cached trunk features, resumable)",
                       description="Train from a YAML config (os2d.coae.config.CoaeTrainConfig); KEY=VALUE arguments "
                                   "override config entries (steps=6000 head.fc_dim=128).")
    add_head_training_args(p, run_files="cache/, checkpoint.pt, coae.pt")
    p.set_defaults(func=cmd_train_coae)


__all__ = ["add_parser", "cmd_train_coae"]
