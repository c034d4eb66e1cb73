"""The ``os2d`` command line: the parser of every command, and :func:`main`, which runs one.

Imports flow one way: ``main`` -> one module per command (group) -> ``common``; nothing imports ``main``.
Only the public API is called; the CLI prints, the library logs.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

from os2d.apps.cli import (
    demo,
    detect,
    finetune,
    pretrain,
    serve,
    synth,
    train,
    train_coae,
    train_detector,
    weights,
)
from os2d.apps.cli import eval as eval_cmd
from os2d.errors import Os2dError
from os2d.runtime import tune_allocator

# User input that is not an Os2dError: a path the user gave that is missing, unreadable or a folder ...
USER_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# ... or a name the OS refuses (over 255 bytes, a loop of links), or on a read-only file system.
USER_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS})


def build_parser() -> argparse.ArgumentParser:
    """The ``os2d`` parser with every subcommand (building it imports no torch)."""
    parser = argparse.ArgumentParser(prog="os2d", description="One-shot object detection (OS2D).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    detect.add_parser(sub)  # os2d detect
    demo.add_parser(sub)  # os2d demo
    serve.add_parser(sub)  # os2d serve
    weights.add_parser(sub)  # os2d weights list|download|import|compact, os2d export
    eval_cmd.add_parser(sub)  # os2d eval, os2d dataset-stats
    pretrain.add_parser(sub)  # os2d pretrain-transform
    synth.add_parser(sub)  # os2d synth
    train.add_parser(sub)  # os2d train, os2d plot-log
    finetune.add_parser(sub)  # os2d finetune
    train_detector.add_parser(sub)  # os2d train-detector
    train_coae.add_parser(sub)  # os2d train-coae
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``os2d`` command; returns the exit code.

    0: done; 1: done, but some inputs failed (e.g. unreadable images, reported one per line); 2: a user error
    (an :class:`~os2d.errors.Os2dError` or a missing / unreadable path), printed as ``os2d: error: ...``.
    Any other exception is a bug and propagates with its traceback.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        tune_allocator()  # before a command imports torch: faster, same results (os2d.runtime)
        return int(args.func(args))
    except (Os2dError, *USER_PATH_ERRORS) as e:
        print(f"os2d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("os2d: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `os2d weights list | head`
        sys.stderr.close()
        return 0
    except OSError as e:
        if e.errno not in USER_PATH_ERRNOS:
            raise
        print(f"os2d: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
