"""``os2d train`` and ``os2d plot-log`` subcommands.

    os2d train --config configs/tiny.yaml sampler.batch_size=2 optim.lr=1e-3 --output-dir runs/tiny
    os2d train --resume runs/tiny max_iter=2000          # continue (config from the checkpoint)
    torchrun --nproc_per_node 2 -m os2d train --config configs/v2.yaml    # one process per GPU
    os2d plot-log runs/tiny/train_log.jsonl --output curves.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from os2d.apps.cli.common import (
    CliError,
    add_output_dir,
    add_output_file,
    add_quiet,
    check_writable_dir,
    check_writable_file,
)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def resolve_train_config(config_path: str | None, overrides: list[str], *, resume: str | None = None,
                         output_dir: str | None = None):
    """(config, checkpoint to resume or None) from the command line.

    Without ``--config``, a resumed run takes the config saved in its checkpoint; ``key=value`` overrides
    apply on top either way (e.g. ``max_iter=...`` to train longer). A resumed run writes into the run
    directory of its checkpoint unless ``--output-dir`` says otherwise.

    Raises:
        CliError: a bad config file, override or resume path (the user's input).
    """
    from os2d.train import checkpoint as ckpt_io
    from os2d.train.config import load_train_config, train_config_from_dict

    ckpt = ckpt_io.resolve_resume(resume) if resume else None
    if config_path is None and ckpt is None:
        raise CliError("give --config CONFIG.yaml (or --resume RUN_DIR to continue a run)")
    try:  # config validation raises ValueError: here it is the user's file or KEY=VALUE override
        if config_path is not None:
            config = load_train_config(config_path, overrides)
        else:
            saved = ckpt_io.load_training_checkpoint(ckpt)["train_config"]
            config = train_config_from_dict(saved, overrides)
    except ValueError as e:
        raise CliError(str(e)) from e
    if output_dir is not None:
        config = config.replace(output_dir=output_dir)
    elif ckpt is not None and ckpt.parent.name == ckpt_io.CHECKPOINT_DIR:
        config = config.replace(output_dir=str(ckpt.parent.parent))
    return config, ckpt


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from os2d.train.trainer import train

    config, ckpt = resolve_train_config(args.config, list(args.overrides), resume=args.resume,
                                        output_dir=args.output_dir)
    check_writable_dir(config.output_dir, "--output-dir")
    quiet = args.quiet or not _is_main_process()
    if not quiet:
        print(f"os2d train: {config.model.backbone} {config.model.variant}, {config.max_iter} iterations -> "
              f"{config.output_dir}" + (f" (resuming {ckpt})" if ckpt else ""), file=sys.stderr)
    summary = train(config, resume=ckpt, progress=not quiet)
    if not quiet:
        terms = summary.last_terms
        print(f"done: {summary.steps} iterations ({summary.steps - summary.start_step} in this run, "
              f"{summary.skipped_steps} skipped) in {summary.seconds:.1f} s; last loss "
              f"{terms.get('loss', float('nan')):.4f}")
        if summary.best:
            print(f"best {summary.best['metric']} {summary.best['value']:.4f} at step {summary.best['step']}: "
                  f"{summary.best_model}")
        print(f"final model: {summary.final_model}")
    return 0


def cmd_plot_log(args: argparse.Namespace) -> int:
    from os2d.train.plot_log import plot_log

    for p in args.logs:
        if not Path(p).exists():
            raise CliError(f"training log not found: {p}")
    check_writable_file(args.output, "--output")
    out = plot_log(args.logs, args.output, smooth=args.smooth, keys=args.keys)
    if not args.quiet:
        print(f"wrote {out}")
    return 0


class _IntermixedArgumentParser(argparse.ArgumentParser):
    """Takes KEY=VALUE overrides anywhere among the options (plain argparse takes one run of positionals, so
    ``--config C a=1 --quiet b=2`` would reject ``b=2``)."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        if self._parsing:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``train`` and ``plot-log`` with the ``os2d`` parser."""
    p = sub.add_parser("train", help="train an OS2D model from a YAML config (resumable; torchrun for DDP)",
                       description="Train from a YAML config; KEY=VALUE arguments override config entries "
                                   "(dotted keys, YAML values: sampler.batch_size=2 schedule.milestones=[100,200]).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", default=None, metavar="CONFIG.yaml", help="training config (see configs/)")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="checkpoint file, or run directory (its newest checkpoint): continue exactly")
    add_output_dir(p, required=False, deprecated=("--output", "-o"), help="run folder (overrides output_dir)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_quiet(p)
    p.set_defaults(func=cmd_train)
    p.__class__ = _IntermixedArgumentParser  # same parser, intermixed positionals

    p = sub.add_parser("plot-log", help="plot training curves (loss terms, eval metrics) from train_log.jsonl")
    p.add_argument("logs", nargs="+", metavar="LOG.jsonl", help="train_log.jsonl files or run directories")
    add_output_file(p, metavar="curves.png", deprecated=("--out",), help="the picture to write (PNG, PDF, SVG)")
    p.add_argument("--smooth", type=int, default=20, help="running-mean window for per-iteration curves")
    p.add_argument("--keys", nargs="+", default=None, help="training terms to draw (default: all loss terms, "
                                                              "lr, grad_norm, patches_per_s)")
    add_quiet(p)
    p.set_defaults(func=cmd_plot_log)


__all__ = ["add_parser", "cmd_plot_log", "cmd_train", "resolve_train_config"]
