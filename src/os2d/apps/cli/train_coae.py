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

from os2d.apps.cli.common import CliError, add_output_dir, add_quiet, check_writable_dir


def cmd_train_coae(args: argparse.Namespace) -> int:
    from os2d.train.coae import CHECKPOINT, coae_config_from_checkpoint, load_coae_config, run_coae_training

    overrides = list(args.overrides)
    try:
        if args.config is not None:
            config = load_coae_config(args.config, overrides)
        elif args.resume is not None:
            ckpt = Path(args.resume) / CHECKPOINT if Path(args.resume).is_dir() else Path(args.resume)
            if not ckpt.is_file():
                raise CliError(f"--resume: no checkpoint at {ckpt}")
            config = coae_config_from_checkpoint(ckpt, overrides)
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
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", default=None, metavar="CONFIG.yaml", help="training config")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="run folder or its checkpoint.pt: continue (cached features and steps are reused)")
    add_output_dir(p, required=False, help="run folder (overrides output_dir): cache/, checkpoint.pt, coae.pt")
    add_quiet(p)
    p.set_defaults(func=cmd_train_coae)


__all__ = ["add_parser", "cmd_train_coae"]
