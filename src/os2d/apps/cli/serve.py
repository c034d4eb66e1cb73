"""``os2d serve``: the HTTP service (JSON API + web page); needs the ``serve`` extra."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from os2d.apps.cli.common import (
    CliError,
    add_model_args,
    add_precision_args,
    add_quiet,
    add_second_look_args,
    apply_fast,
    check_writable_dir,
    device_from_args,
)
from os2d.config import HEADS_PRECISIONS, InferenceConfig


def check_listen(host: str, port: int) -> None:
    """Fail in one line, before the model loads, if ``host:port`` cannot be listened on (in use, no such host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind(infos[0][4])
    except OSError as e:
        raise CliError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from e


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be in 0..65535, got {args.port}")
    device_from_args(args.device)  # an unknown or unavailable device: one line now, not a traceback at startup
    try:
        import uvicorn

        from os2d.apps.service.app import ServiceSettings, create_app, default_data_dir
    except ImportError as e:
        raise CliError(f"`os2d serve` needs the serve extra: pip install 'os2d[serve]' ({e})") from e
    apply_fast(args)
    try:
        settings = ServiceSettings(
            weights=args.weights, data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
            token=args.token or os.environ.get("OS2D_TOKEN") or None, max_upload_mb=args.max_upload_mb,
            max_pixels=args.max_pixels, queue_size=args.workers_queue, timeout_s=args.timeout, device=args.device,
            torch_threads=args.threads, shortlist_top_k=args.shortlist,
            heads_precision=args.heads_precision or InferenceConfig.heads_precision,
            colour_rescore=args.colour_rescore, verify_rescore=args.verify_rescore,
            refine_top=args.refine_top, reshape_top=args.reshape_top, verify_size=args.verify_size,
            verify_rivals=args.verify_rivals, verify_colour=args.verify_colour,
            verify_colour_margin=args.verify_colour_margin, verify_chroma=args.verify_chroma,
            trunk_precision=args.trunk_precision,
            verify_precision=args.verify_precision)
    except ValueError as e:
        raise CliError(str(e)) from e
    check_writable_dir(settings.data_dir, "--data-dir")
    check_listen(args.host, args.port)
    app = create_app(settings)  # a data dir that cannot be used: StoreError, one line
    if not args.quiet:
        print(f"os2d serve: http://{args.host}:{args.port}/ (API docs at /docs), data in {settings.data_dir}"
              + (", write endpoints need the token" if settings.token else ""), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``serve``."""
    p = sub.add_parser("serve", help="run the HTTP service (JSON API + web page); needs os2d[serve]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_model_args(p)
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="gallery storage, read and written (default $OS2D_DATA or ~/.local/share/os2d)")
    p.add_argument("--token", default=None, help="token required by write endpoints (default $OS2D_TOKEN)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload per file")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest accepted image (pixels)")
    p.add_argument("--workers-queue", type=int, default=4, metavar="N",
                   help="requests queued for the inference worker; more get 503")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request timeout (503 after)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--shortlist", type=int, default=None, metavar="K",
                   help="run the heads only for the K classes ranked best per image (large galleries)")
    p.add_argument("--heads-precision", choices=HEADS_PRECISIONS, default=None,
                   help="TransformNet's arithmetic: fp32 (exact), int8 (~2.5x faster heads on CPUs with 8-bit "
                        "dot products) or int8-exact (the default: int8 search, float32 values); README, Speed")
    add_precision_args(p)
    p.add_argument("--colour-rescore", type=float, default=0.0, metavar="G",
                   help="scores x colour agreement with the class image ** G (default 0: raw OS2D scores; README, "
                        "Colour re-scoring)")
    add_second_look_args(p)
    add_quiet(p)
    p.set_defaults(func=cmd_serve)


__all__ = ["add_parser", "cmd_serve"]
