"""``os2d weights ...`` and ``os2d export`` subcommands (weights registry, download, import, ONNX export)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from os2d.apps.cli.common import (
    CliError,
    DeprecatedAlias,
    add_class_args,
    add_output_dir,
    add_output_file,
    add_quiet,
    check_writable_dir,
    check_writable_file,
    classes_from_args,
    new_weights_file,
    register_classes,
)

VARIANT_WORDS = {"v1": "V1 (scale + translation, P=4)", "v2": "V2 (full affine, inverted, P=6)"}
# = os2d.weights.convert.FORMATS (not imported here: building the parser must not import torch)
FORMATS = ("os2d", "official", "torchvision", "caffe2", "cirtorch", "weakalign")
FORMAT_WORDS = {
    "os2d": "os2d checkpoint", "official": "official OS2D checkpoint", "torchvision": "torchvision ResNet",
    "caffe2": "Caffe2 ResNet (cirtorch port)", "cirtorch": "cirtorch retrieval network",
    "weakalign": "weakalign model (Rocco et al.)",
}


def _human_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return ""  # pragma: no cover


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _imported_info(path: Path) -> tuple[str, str]:
    """(model, licence) of an imported os2d checkpoint, read lazily (mmap); ("?", "?") for anything else."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        config, source = obj["config"], obj.get("source") or {}
        variant = "v2" if config["num_transform_params"] == 6 else "v1"
        return f"{config['backbone']} {variant}", str(source.get("licence") or "?")
    except Exception:  # noqa: BLE001 - a listing never fails on a foreign file
        return "?", "?"


def cmd_list(args: argparse.Namespace) -> int:
    from os2d.weights import DEFAULT_WEIGHTS, packaged_weights_path
    from os2d.weights import registry as reg

    rows = []
    for entry in reg.REGISTRY.values():
        if entry.kind == "packaged":  # a file inside the installed package
            path = packaged_weights_path(entry.name, check=False)
            status, size = ("packaged", _human_size(path.stat().st_size)) if path.is_file() else ("missing", "?")
            if entry.name == DEFAULT_WEIGHTS:
                status += " (default)"
        elif entry.kind == "builtin":
            status, size = "builtin", "-"
        else:
            found = reg.resolve(entry.name)
            status = "present" if found else "missing"
            size = _human_size(found.path.stat().st_size) if found else (
                f"~{entry.approx_size_mb:.0f} MB" if entry.approx_size_mb else "?")
        cfg = entry.config
        rows.append([entry.name, status, size, f"{cfg.backbone} {cfg.variant}", entry.kind, entry.licence])
    known = {f"{e.name}.pth" for e in reg.REGISTRY.values()} | {e.filename for e in reg.REGISTRY.values()}
    for folder in reg.search_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.pth")):
                if path.name not in known:
                    model, licence = _imported_info(path)
                    rows.append([path.stem, "imported", _human_size(path.stat().st_size), model, "file", licence])
                    known.add(path.name)
    _print_table(rows, ["NAME", "STATUS", "SIZE", "MODEL", "KIND", "LICENCE"])
    print(f"\nsearched: {', '.join(str(d) for d in reg.search_dirs())}  "
          f"(${reg.ENV_WEIGHTS_DIR} first, then the cache ${reg.ENV_HOME}/weights)")
    if args.verbose_list:
        print()
        for entry in reg.REGISTRY.values():
            print(f"{entry.name}: {entry.description}\n    file: {entry.filename or '-'}; "
                  f"from: {entry.browser_url or entry.origin}; licence: {entry.licence}")
    return 0


def _describe_model(model, report) -> list[str]:
    from os2d.weights.convert import count_parameters

    cfg = model.config
    backbone = count_parameters(model.backbone)
    transform = count_parameters(model.transform_net)
    lines = [
        f"found: {FORMAT_WORDS.get(report.format, report.format)} -> {cfg.backbone}, "
        f"{VARIANT_WORDS.get(cfg.variant, cfg.variant)}",
        f"  loaded: {', '.join(report.loaded)} ({report.num_tensors} tensors)"
        + ("" if "transform_net" in report.loaded else "; TransformNet at the identity (sliding-window regime)"),
        f"  parameters: backbone {backbone:,} + TransformNet {transform:,} = {backbone + transform:,}",
    ]
    if report.dropped:
        groups = sorted({k.split(".")[0] for k in report.dropped})
        lines.append(f"  not used: {len(report.dropped)} keys ({', '.join(groups[:8])})")
    if report.filled:
        lines.append(f"  added {len(report.filled)} num_batches_tracked buffers (file from PyTorch < 0.4.1)")
    return lines


def cmd_download(args: argparse.Namespace) -> int:
    from os2d.weights import model_from_file
    from os2d.weights import registry as reg
    from os2d.weights.download import download

    entry = reg.get_entry(args.name)
    if entry is None:
        raise CliError(f"unknown weights {args.name!r}; known: {', '.join(sorted(reg.REGISTRY))}")
    check_writable_dir(args.output_dir, "--output-dir")
    path = download(entry.name, dest_dir=args.output_dir, force=args.force, progress=not args.quiet,
                    log=lambda m: None if args.quiet else print(m, file=sys.stderr))
    model, report = model_from_file(path, "auto", config=entry.config)
    if not args.quiet:
        for line in _describe_model(model, report):
            print(line)
        print(f"use it: os2d detect --weights {entry.name} ...")
    return 0


def _import_name(path: Path, name: str | None) -> str:
    from os2d.weights import registry as reg

    if name is None:
        entry = reg.get_entry(path.name)
        name = entry.name if entry is not None else re.sub(r"(\.pth)?(\.tar)?$|\.pt$", "", path.name)
    if not re.fullmatch(r"[A-Za-z0-9][\w.+-]*", name):
        raise CliError(f"--name {name!r}: use letters, digits and . _ + - only")
    entry = reg.get_entry(name)
    if entry is not None and entry.kind == "builtin":
        raise CliError(f"{name!r} is a built-in weights name; choose another --name")
    return name


def cmd_import(args: argparse.Namespace) -> int:
    from os2d.weights import model_from_file, save_checkpoint
    from os2d.weights import registry as reg
    from os2d.weights.download import sha256_file

    path = Path(args.path).expanduser()
    if not path.is_file():
        raise CliError(f"file not found: {path}")
    name = _import_name(path, args.name)
    entry = reg.get_entry(name)
    config = entry.config if entry is not None else None
    dest_dir = Path(args.output_dir).expanduser() if args.output_dir else reg.weights_cache_dir()
    check_writable_dir(dest_dir, "--output-dir")
    target = dest_dir / f"{name}.pth"
    if target.exists() and not args.force and target.resolve() != path.resolve():
        raise CliError(f"{target} exists; pass --force to replace it")
    check_writable_file(target, "--output-dir")
    model, report = model_from_file(path, args.format, backbone=args.backbone, variant=args.variant,
                                    transform=args.transform, config=config)
    if not args.quiet:
        for line in _describe_model(model, report):
            print(line)
    source = {"file": path.name, "format": report.format, "sha256": sha256_file(path),
              "licence": entry.licence if entry is not None else None}
    if args.transform:
        source["transform_file"] = Path(args.transform).name
    save_checkpoint(target, model, source=source)
    if not args.quiet:
        print(f"saved: {target}")
        print(f"use it: os2d detect --weights {name if not args.output_dir else target} ...")
    return 0


def _export_kernels(args: argparse.Namespace, model):
    """Class kernels to bake in (from --class / --classes / --gallery) with their names and aspect ratios, or
    (None, None, None) for a kernels input."""
    classes = classes_from_args(args)
    if not classes and not args.gallery:
        return None, None, None
    from os2d.detector import Detector

    detector = Detector(model, device="cpu")
    register_classes(detector, classes, gallery=args.gallery)
    gallery = detector.gallery
    names = [gallery.class_names[i] for i in gallery.view_class.tolist()]
    return gallery.kernels, names, gallery.view_aspect


def cmd_export(args: argparse.Namespace) -> int:
    from os2d.export import export_class_encoder_onnx, export_onnx
    from os2d.weights import load_model

    if args.onnx is None and args.class_encoder is None:
        raise CliError("nothing to export: give --onnx OUT.onnx and/or --class-encoder OUT.onnx")
    check_writable_file(args.onnx, "--onnx")
    check_writable_file(args.class_encoder, "--class-encoder")
    model = load_model(args.weights)
    if args.onnx:
        kernels, names, aspect = _export_kernels(args, model)
        report = export_onnx(model, args.onnx, height=args.height, width=args.width, kernels=kernels,
                             class_names=names, exporter=args.exporter, opset=args.opset, verify=not args.no_verify,
                             aspect=aspect)
        if not args.quiet:
            print(report.summary())
            if kernels is not None:
                print(f"baked-in kernels (one per output channel K): {names}")
            print(f"input: RGB float32 in [0, 1] resized to exactly {args.width}x{args.height} (w x h); "
                  "boxes and corners are in that frame; decode, threshold and NMS outside the graph")
    if args.class_encoder:
        report = export_class_encoder_onnx(model, args.class_encoder, exporter=args.exporter, opset=args.opset,
                                           verify=not args.no_verify)
        if not args.quiet:
            print(report.summary())
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from os2d.weights import load_model, save_checkpoint

    out = new_weights_file(args)
    model = load_model(args.weights)
    save_checkpoint(out, model, half=not args.float32)
    if not args.quiet:
        print(f"{out}: {model.config.backbone} {model.config.variant}, "
              f"{'float32' if args.float32 else 'float16'} tensors, {_human_size(out.stat().st_size)}")
    return 0


def _add_cache_output(q: argparse.ArgumentParser, *, where: str, force: str) -> None:
    """The output options of the commands that write into the weights cache: folder, --force, --quiet."""
    add_output_dir(q, required=False, deprecated=("--dir",), help=where)
    q.add_argument("--force", action="store_true", help=force)
    add_quiet(q)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the weights/export subcommands to the ``os2d`` parser."""
    p = sub.add_parser("weights", help="list, download and import model weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)

    q = wsub.add_parser("list", help="known weights and whether they are on this machine")
    q.add_argument("--long", dest="verbose_list", action="store_true", help="also describe each entry")
    q.set_defaults(func=cmd_list)

    q = wsub.add_parser("download", help="download known weights into the cache (~/.cache/os2d/weights)")
    q.add_argument("name", help="registry name (see `os2d weights list`)")
    _add_cache_output(q, where="download here instead of the cache", force="download again even if present")
    q.set_defaults(func=cmd_download)

    q = wsub.add_parser("import", help="check and convert a weights file you have into an os2d checkpoint")
    q.add_argument("path", help="official OS2D .pth, torchvision / Caffe2 / cirtorch ResNet, weakalign .pth.tar, ...")
    q.add_argument("--name", default=None, help="name to use with --weights (default: registry name or file stem)")
    q.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    q.add_argument("--backbone", default=None, choices=["resnet50", "resnet101", "efficientnet_lite0",
                                                        "efficientnet_lite2"],
                   help="expected backbone (checked against the file)")
    q.add_argument("--variant", default=None, choices=["v1", "v2"],
                   help="V1/V2 head for backbone-only files (default v2); checked for full checkpoints")
    q.add_argument("--transform", default=None, metavar="WEAKALIGN.pth.tar",
                   help="initialise the TransformNet from weakalign's affine regressor (V2)")
    _add_cache_output(q, where="save NAME.pth here instead of the cache",
                      force="replace an existing checkpoint of that name")
    q.set_defaults(func=cmd_import)

    q = wsub.add_parser("compact", help="write a model as a small inference-only file (no optimizer; float16)")
    q.add_argument("weights", help="checkpoint path (e.g. a training run's best.pt) or weights name")
    add_output_file(q, metavar="OUT.pt", required=False, help="the file to write (loads with --weights OUT.pt)")
    q.add_argument("output", nargs="?", metavar="OUT", action=DeprecatedAlias, use="--output OUT",
                   help=argparse.SUPPRESS)  # the old positional spelling: os2d weights compact WEIGHTS OUT
    q.add_argument("--float32", action="store_true", help="keep float32 tensors (twice the size)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_quiet(q)
    q.set_defaults(func=cmd_compact)

    from os2d.apps.cli.calibrate import add_subparser as add_calibrate

    add_calibrate(wsub)

    p = sub.add_parser("export", help="export the detector (fixed input size) to ONNX")
    p.add_argument("--onnx", metavar="OUT.onnx", help="detector graph: image (+ kernels) -> scores, boxes, corners")
    p.add_argument("--class-encoder", metavar="OUT.onnx", help="also export the class-image encoder -> kernels")
    p.add_argument("--weights", default="default", help="weights name or checkpoint path")
    p.add_argument("--height", type=int, default=768, help="input height in pixels (default 768)")
    p.add_argument("--width", type=int, default=1024, help="input width in pixels (default 1024)")
    add_class_args(p, what="their kernels are baked in; without classes, kernels are an input")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18 dynamo, 17 torchscript)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    add_quiet(p)
    p.set_defaults(func=cmd_export)
