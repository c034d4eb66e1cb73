"""What ``os2d train-detector`` and ``os2d train-coae`` share: both train a small head on cached trunk features
from a YAML config (``--config``) or continue a run folder (``--resume``, config from its checkpoint), with
``KEY=VALUE`` overrides and ``--output-dir``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from os2d.apps.cli.common import CliError, add_output_dir, add_quiet


def add_head_training_args(p: argparse.ArgumentParser, *, run_files: str) -> None:
    """Overrides, ``--config``, ``--resume``, ``--output-dir`` (the run folder holds ``run_files``), ``--quiet``."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", default=None, metavar="CONFIG.yaml", help="training config")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="run folder or its checkpoint.pt: continue (cached features and progress are reused)")
    add_output_dir(p, required=False, help=f"run folder (overrides output_dir): {run_files}")
    add_quiet(p)


def head_run_config(args: argparse.Namespace, cls: type, checkpoint_name: str) -> Any:
    """The ``cls`` config of ``--config FILE`` or of ``--resume``'s checkpoint, with the overrides and
    ``--output-dir`` applied (a resumed run keeps its folder unless ``--output-dir`` says otherwise).

    Raises:
        CliError: neither flag, no checkpoint, a bad file or override, or no run folder.
    """
    import torch

    from os2d.train.dataclass_io import config_with_overrides, load_yaml_mapping

    try:
        if args.config is not None:
            config = config_with_overrides(cls, load_yaml_mapping(args.config), args.overrides)
        elif args.resume is not None:
            ckpt = Path(args.resume) / checkpoint_name if Path(args.resume).is_dir() else Path(args.resume)
            if not ckpt.is_file():
                raise CliError(f"--resume: no checkpoint at {ckpt}")
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)["config"]
            config = config_with_overrides(cls, saved, args.overrides)
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
    return config


__all__ = ["add_head_training_args", "head_run_config"]
