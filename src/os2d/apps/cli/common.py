"""What every ``os2d`` command shares: the user-error type, the flag conventions, the inference options, class
and image-list readers, and the writability checks done before any work starts.

The conventions (README "Command line"): a file the command writes is ``--output/-o FILE``; a folder it writes
is ``--output-dir DIR``; ``--quiet/-q`` turns off progress bars and status lines; ``--max-detections 0`` means
no cap. Old spellings still parse, with a one-line ``os2d: warning: ... is deprecated`` on stderr.

Nothing here imports torch: building the parser and ``os2d --help`` stay fast.
"""

from __future__ import annotations

import argparse
import csv
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from os2d.config import BACKBONE_PRECISIONS, HEADS_PRECISIONS
from os2d.errors import Os2dError


class CliError(Os2dError):
    """A user error: printed as ``os2d: error: ...`` with exit code 2, never as a traceback."""


def warn(message: str) -> None:
    """One line ``os2d: warning: ...`` on stderr."""
    print(f"os2d: warning: {message}", file=sys.stderr)


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option (or an old positional): stores like the new one, warns once on stderr.

    ``nargs=0`` with ``const`` makes a deprecated switch (``--no-progress`` stores ``quiet=True``). A positional
    with ``nargs="?"`` is left alone when absent (argparse calls the action with its default then).
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, use: str, **kwargs: Any) -> None:
        self.use = use
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string is None and values == self.default:  # an optional positional that was not given
            return
        old = option_string or f"{self.metavar or self.dest.upper()} as a positional argument"
        warn(f"{old} is deprecated; use {self.use}")
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _add_with_aliases(p: argparse.ArgumentParser, flags: Sequence[str], dest: str, deprecated: Sequence[str],
                      *, required: bool, **kwargs: Any) -> None:
    """``flags`` (the documented spelling) plus hidden ``deprecated`` spellings of the same option."""
    if required and deprecated:  # argparse's `required` would reject a run that used the old spelling only
        group: Any = p.add_mutually_exclusive_group(required=True)
    else:
        group = p
    group.add_argument(*flags, dest=dest, required=required and not deprecated, **kwargs)
    for old in deprecated:
        group.add_argument(old, dest=dest, action=DeprecatedAlias, use=flags[0], help=argparse.SUPPRESS)


def add_output_file(p: argparse.ArgumentParser, *, help: str, metavar: str = "FILE", required: bool = True,
                    deprecated: Sequence[str] = ()) -> None:
    """``--output/-o FILE``: the one file the command writes (``args.output``)."""
    _add_with_aliases(p, ("--output", "-o"), "output", deprecated, required=required, metavar=metavar, help=help)


def add_output_dir(p: argparse.ArgumentParser, *, help: str, required: bool = True, default: str | None = None,
                   deprecated: Sequence[str] = ()) -> None:
    """``--output-dir DIR``: the folder the command writes (``args.output_dir``)."""
    _add_with_aliases(p, ("--output-dir",), "output_dir", deprecated, required=required, metavar="DIR",
                      default=default, help=help)


def add_quiet(p: argparse.ArgumentParser, *, deprecated: Sequence[str] = ()) -> None:
    """``--quiet/-q`` (``args.quiet``); ``deprecated`` switches (``--no-progress``) mean the same."""
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or status lines (errors still print)")
    for old in deprecated:
        p.add_argument(old, dest="quiet", action=DeprecatedAlias, use="--quiet", nargs=0, const=True,
                       help=argparse.SUPPRESS)


def add_model_args(p: argparse.ArgumentParser, *, weights_help: str = "weights name (see `os2d weights list`) "
                                                                     "or checkpoint path") -> None:
    """``--weights`` and ``--device``."""
    p.add_argument("--weights", default="default", help=weights_help)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")


def add_inference_args(p: argparse.ArgumentParser, *, image_size_help: str, shortlist: bool = False) -> None:
    """The :class:`~os2d.config.InferenceConfig` options of ``detect`` and ``eval`` (see :func:`inference_config`)."""
    g = p.add_argument_group("inference options")
    g.add_argument("--image-size", type=parse_image_size, default=None, metavar="auto|N|0", help=image_size_help)
    g.add_argument("--scales", type=float, nargs="+", default=None,
                   help="pyramid scales (default 1.0; reference: 0.5 0.625 0.8 1 1.2 1.4 1.6)")
    g.add_argument("--all-levels", action="store_true",
                   help="every class at each of six fixed pyramid levels, sqrt(w*h) 384 to 2048, instead of the one or "
                        "two the automatic scale picks: more recall (small instances) at 2.4-4.4x the time; "
                        "--image-size / --scales given explicitly win (README 'Automatic scale, what the levels leave')")
    g.add_argument("--size-prior", type=float, default=None, metavar="A",
                   help="automatic scale: the probe picks the template of the best score + A * ln(cells) (default: the "
                        "library's, 0.06, which finds close-ups; 0: the plain score, better on shelves of small facings; "
                        "README 'Automatic scale, close-ups')")
    g.add_argument("--rescue-confidence", type=float, default=None, metavar="C",
                   help="automatic scale: when no detection of the planned levels reaches the calibrated confidence C, "
                        "classes whose probe score peaks clearly at another size also run at that size (default 0.01; "
                        "0: never; README 'Automatic scale, the rescue')")
    g.add_argument("--score-threshold", type=float, default=None, help="drop detections scoring below this")
    g.add_argument("--max-detections", type=int, default=None, metavar="N",
                   help="keep the N best per image after NMS (default 100; 0 = no cap)")
    g.add_argument("--nms-iou", type=float, default=None, help="per-class NMS IoU threshold (default 0.3)")
    g.add_argument("--rotations", action="store_true", help="add 90/180/270-degree rotated class views")
    g.add_argument("--hflip", action="store_true", help="add horizontally flipped class views")
    g.add_argument("--heads-precision", choices=HEADS_PRECISIONS, default=None,
                   help="TransformNet's arithmetic: int8-exact (the default: int8 finds the detections, the float32 "
                        "heads give their values), fp32 (the dense float32 heads, the reference's) or int8 (int8 "
                        "values, fastest); int8 applies on CPUs with 8-bit dot products, fp32 runs elsewhere")
    add_precision_args(g)
    g.add_argument("--colour-rescore", type=float, default=None, metavar="G",
                   help="multiply each score by its box's colour agreement with the class image to the power G "
                        "(for look-alikes that differ in colour; default 0 = off: the raw OS2D score)")
    add_second_look_args(g)
    g.add_argument("--refine-crop", choices=("aspect", "squeeze"), default=None,
                   help="the zoomed crop of --refine-top (default: the config's)")
    if shortlist:
        g.add_argument("--shortlist", type=int, default=None, metavar="K",
                       help="run the full heads only for the K classes ranked best per image by a cheap "
                            "pooled-feature match (for large galleries; default: all classes)")


def add_second_look_args(g: Any) -> None:
    """``--verify-rescore G`` and ``--refine-top K`` (None: the library's defaults), for detect, eval and serve."""
    g.add_argument("--verify-rescore", type=float, default=None, metavar="G",
                   help="second look: re-score the best detections by their crop's agreement with the class at the "
                        "class image's size, to the power G (0 = off; default: the library's, README 'Second look')")
    g.add_argument("--verify-size", type=int, default=None, metavar="S",
                   help="the second look's crops at area S^2 pixels with the class image's aspect ratio (default: "
                        "the library's, README 'Second look')")
    g.add_argument("--verify-rivals", type=float, default=None, metavar="D",
                   help="the second look also compares each crop with the other classes and multiplies the score by "
                        "(agreement / best agreement of any class)^D: look-alikes of another class go down (0 = off; "
                        "default: the library's, README 'Second look')")
    g.add_argument("--verify-colour", type=float, default=None, metavar="G",
                   help="colour in the rivals' comparison: each side times the crop's colour agreement with that "
                        "class image to the power G (0 = off; default: the library's, README 'Second look')")
    g.add_argument("--verify-colour-margin", type=float, default=None, metavar="M",
                   help="colour moves the rivals' comparison by at most the factor M >= 1 (inf: no bound; default: "
                        "the library's)")
    g.add_argument("--verify-chroma", type=float, default=None, metavar="T",
                   help="the second look also multiplies each score by max(0.25, min(1, s / T)), s the chromatic colour "
                        "agreement of its crop with the class image where both are at least 30%% coloured (0 = off; "
                        "default: the library's, README 'Second look')")
    g.add_argument("--reshape-top", type=int, default=None, metavar="K",
                   help="shape search: the second look's K best detections also try their box stretched toward the "
                        "class image's aspect ratio and keep the shape that agrees best (0 = off; default: the "
                        "library's, README 'Second look')")
    g.add_argument("--refine-top", type=int, default=None, metavar="K",
                   help="re-localise the K best detections per image by the heads on zoomed crops at the class's "
                        "own scale and shape (0 = off; default: the library's, README 'Zoomed re-localisation')")


# --fast: the value each precision option takes unless it is given explicitly (README, Speed)
FAST_PRECISIONS = {"heads_precision": "int8", "trunk_precision": "bf16", "verify_precision": "bf16"}


def apply_fast(args: argparse.Namespace) -> None:
    """With ``--fast``, every precision option of :data:`FAST_PRECISIONS` that was not given takes its fast value
    (in place)."""
    if getattr(args, "fast", False):
        for key, value in FAST_PRECISIONS.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)


def add_precision_args(g: Any) -> None:
    """``--trunk-precision``, ``--verify-precision`` (None: the library's defaults) and ``--fast``, for detect, eval
    and serve."""
    bf16 = "bf16 where the device has bf16 dot products (GPUs; CPUs with AVX512-BF16 or AMX), float32 elsewhere"
    g.add_argument("--trunk-precision", choices=BACKBONE_PRECISIONS, default=None,
                   help=f"the photo's backbone: fp32 (exact, the reference's) or {bf16}; default: the library's "
                        "(README, Speed: with --verify-precision bf16 too, 1.3x faster here but -2.9 mAP on the "
                        "FL27 tuning logos)")
    g.add_argument("--verify-precision", choices=BACKBONE_PRECISIONS, default=None,
                   help=f"the second look's crops through the backbone: fp32 or {bf16}; default: the library's "
                        "(README, Speed: 1.1x faster here, the same mAP)")
    g.add_argument("--fast", action="store_true",
                   help="the approximations together: --heads-precision int8 --trunk-precision bf16 "
                        "--verify-precision bf16, each where the hardware has it (a precision option given "
                        "explicitly wins). README, Speed: 1.6x faster at default settings on this project's CPU, "
                        "mAP@0.5 within 2 points of the exact default on held-out logo photos")


def device_from_args(device: str) -> Any:
    """The ``torch.device`` of a ``--device`` value; an unknown or unavailable device -> :class:`CliError`."""
    from os2d.detector import resolve_device

    try:
        return resolve_device(device)
    except RuntimeError as e:  # torch.device("bogus"): its message lists every device type torch knows
        raise CliError(f"--device {device}: unknown device; use cpu, cuda, cuda:N or auto") from e
    except ValueError as e:  # e.g. CUDA not available
        raise CliError(f"--device {device}: {e}") from e


_FROM_ARGS = object()


def parse_image_size(text: str) -> str | int:
    """``--image-size``: ``auto`` (levels chosen per image, :mod:`os2d.inference.autoscale`), a positive
    sqrt(w*h) in pixels, or 0 (keep the image size)."""
    from os2d.config import AUTO

    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', a number of pixels or 0, got {text!r}") from None
    if value != 0 and value < 16:
        raise argparse.ArgumentTypeError(f"must be 'auto', 0 (keep sizes) or at least 16, got {value}")
    return value


def inference_config(args: argparse.Namespace, *, image_size: Any = _FROM_ARGS):
    """The :class:`~os2d.config.InferenceConfig` of the options of :func:`add_inference_args`.

    Args:
        args: parsed options.
        image_size: the resolved input size (``eval`` computes it from the dataset); by default
            ``--image-size`` (unset: the config's default, ``"auto"``; 0: keep the image size).

    Raises:
        CliError: an option out of range.
    """
    from os2d.config import InferenceConfig

    apply_fast(args)
    changes: dict[str, Any] = {"rotations": args.rotations, "horizontal_flip": args.hflip}
    if image_size is not _FROM_ARGS:
        changes["image_size"] = image_size
    elif args.image_size is not None:
        changes["image_size"] = None if args.image_size == 0 else args.image_size
    if args.scales:
        changes["scales"] = tuple(args.scales)
    if getattr(args, "all_levels", False):  # the fixed six-level pyramid, where the size and scales are not given
        from os2d.config import ALL_LEVELS_SCALES, ALL_LEVELS_SIZE

        if args.image_size is None:
            changes["image_size"] = ALL_LEVELS_SIZE
        changes.setdefault("scales", ALL_LEVELS_SCALES)
    auto: dict[str, Any] = {}
    if getattr(args, "size_prior", None) is not None:
        auto["size_prior"] = args.size_prior
    if getattr(args, "rescue_confidence", None) is not None:
        auto["rescue_confidence"] = args.rescue_confidence or None  # 0: off
    if auto:
        try:
            changes["auto_scale"] = replace(InferenceConfig().auto_scale, **auto)
        except ValueError as e:
            raise CliError(f"--size-prior / --rescue-confidence: {e}") from e
    if args.score_threshold is not None:
        changes["score_threshold"] = args.score_threshold
    if args.max_detections is not None:
        if args.max_detections < 0:
            raise CliError(f"--max-detections must be >= 0 (0 = no cap), got {args.max_detections}")
        changes["max_detections"] = None if args.max_detections == 0 else args.max_detections
    if args.nms_iou is not None:
        changes["nms_iou_threshold"] = args.nms_iou
    if getattr(args, "shortlist", None) is not None:
        changes["shortlist_top_k"] = args.shortlist
    if args.heads_precision is not None:
        changes["heads_precision"] = args.heads_precision
    for key in ("trunk_precision", "verify_precision"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.colour_rescore is not None:
        changes["colour_rescore"] = args.colour_rescore
    if args.verify_rescore is not None:
        changes["verify_rescore"] = args.verify_rescore
    if args.reshape_top is not None:
        changes["reshape_top"] = args.reshape_top
    if args.verify_size is not None:
        changes["verify_size"] = args.verify_size
    for key in ("verify_rivals", "verify_colour", "verify_colour_margin", "verify_chroma"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    if args.refine_top is not None:
        changes["refine_top"] = args.refine_top
    if args.refine_crop is not None:
        changes["refine_crop"] = args.refine_crop
    try:
        return InferenceConfig(**changes)
    except ValueError as e:
        raise CliError(str(e)) from e


def add_class_args(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--class NAME=PATH`` (repeat), ``--classes CSV``, ``--gallery FILE``; ``what`` says what they are for."""
    g = p.add_argument_group(f"classes ({what})")
    g.add_argument("--class", dest="class_args", action="append", metavar="NAME=PATH",
                   help="a class image (repeat; repeat a NAME for several images of one class)")
    g.add_argument("--classes", metavar="CSV|DIR",
                   help="CSV with header name,path, or a folder of class pictures: each image in it is a class named "
                        "by its file stem, each subfolder a class named by the folder with every image inside")
    g.add_argument("--gallery", metavar="FILE", help="load a saved class gallery")


def parse_class_arg(text: str, flag: str = "--class") -> tuple[str, str]:
    """``NAME=PATH`` -> (name, path)."""
    if "=" not in text:
        raise CliError(f"{flag} expects NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    if not name.strip() or not path.strip():
        raise CliError(f"{flag} expects NAME=PATH, got {text!r}")
    return name.strip(), path.strip()


def read_classes_csv(path: str | Path) -> list[tuple[str, str]]:
    """CSV with header ``name,path`` (relative paths are relative to the CSV); one row per class image.

    Several rows with the same name give several class images of that class (few-shot).
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f"classes CSV (or folder) not found: {path}")
    rows: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "name" not in header or "path" not in header:
            raise CliError(f"{path}: header must have columns 'name' and 'path', got {header}")
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            name, p = row.get("name", ""), row.get("path", "")
            if not name or not p:
                raise CliError(f"{path}, row {i}: empty name or path")
            full = Path(p) if Path(p).is_absolute() else path.parent / p
            rows.append((name, str(full)))
    if not rows:
        raise CliError(f"{path}: no classes")
    return rows


def read_classes_folder(folder: str | Path) -> list[tuple[str, str]]:
    """A folder of class pictures -> (name, path) rows, as :func:`read_classes_csv` gives them.

    Each image directly in ``folder`` is a class named by its file stem (``cereal.jpg`` -> ``cereal``); each subfolder
    is a class named by the folder, with every image inside it (recursively) as its pictures (few-shot: ``tea/front.jpg``,
    ``tea/side.jpg``). Hidden files and folders are skipped; names are sorted. Two classes of one name (``tea.jpg`` and
    ``tea.png``, or ``tea.jpg`` and ``tea/``) and an empty subfolder are errors.
    """
    from os2d.runner.discover import images_in_folder, is_image_name

    folder = Path(folder)
    found: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name, paths = entry.name, images_in_folder(entry)
            if not paths:
                raise CliError(f"--classes {folder}: the class folder {entry.name}/ has no images")
        elif entry.is_file() and is_image_name(entry.name):
            name, paths = entry.stem, [str(entry)]
        else:
            continue
        if name in found:
            raise CliError(f"--classes {folder}: two classes named {name!r} ({Path(found[name][0]).name} and "
                           f"{entry.name}); rename one")
        found[name] = paths
    if not found:
        raise CliError(f"--classes {folder}: no class images (.jpg, .png, ... files or subfolders of them)")
    return [(name, p) for name, paths in found.items() for p in paths]


def classes_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, path) of the ``--class`` and ``--classes`` (CSV or folder) options of :func:`add_class_args`, in that
    order."""
    classes = [parse_class_arg(c) for c in args.class_args or []]
    if args.classes:
        classes += read_classes_folder(args.classes) if Path(args.classes).is_dir() else read_classes_csv(args.classes)
    return classes


def new_weights_file(args: argparse.Namespace, hint: str = "") -> Path:
    """``--output OUT.pt`` of a command that writes weights: given, not there unless ``--force``, writable."""
    if args.output is None:
        raise CliError(f"give the file to write: --output OUT.pt{hint}")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists (use --force to replace it)")
    check_writable_file(out, "--output")
    return out


def read_image_list(path: str | Path) -> list[str]:
    """Image paths of a text file, one per line (relative to the file; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise CliError(f"image list not found: {path}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln if Path(ln).is_absolute() else str(path.parent / ln) for ln in lines if ln and not ln.startswith("#")]


def register_classes(detector: Any, classes: list[tuple[str, Any]], *, gallery: str | None = None,
                     negatives: list[tuple[str, Any]] = ()) -> None:
    """Load a saved gallery (optional), add (name, image) classes, then (name, image) negative exemplars of them;
    bad input becomes :class:`CliError`."""
    from os2d.io import ImageError

    if gallery:
        try:
            detector.load_gallery(gallery)
        except ValueError as e:  # computed by another model
            raise CliError(f"--gallery {gallery}: {e}") from e
    for name, image in classes:
        try:
            warnings = detector.add_class(name, image)
        except ImageError as e:
            raise CliError(f"class {name!r}: {e}") from e
        for w in warnings or []:  # os2d.exemplar: the class is added, the user should know it may detect worse
            warn(f"class {name!r}: {w.message}")
    for name, image in negatives:
        if name not in detector.classes:
            raise CliError(f"--negative {name}=...: no class {name!r} (classes: {', '.join(detector.classes)})")
        try:
            detector.add_negative(name, image)
        except ImageError as e:
            raise CliError(f"negative of class {name!r}: {e}") from e


def _stat(path: Path, flag: str) -> os.stat_result | None:
    """``os.stat(path)``; None when it does not exist (or a folder on the way is a file, found later);
    :class:`CliError` when the OS refuses the name (too long, a loop of links, no permission)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise CliError(f"{flag} {path}: {getattr(e, 'strerror', None) or e}") from e


def _probe(folder: Path, name: str, path: Path, flag: str) -> None:
    """Create and remove the new file ``folder/name``: the one honest test that a file can be made there (a
    read-only file system, /proc, a name too long, no permission; ``os.access`` would say yes to root)."""
    try:
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # taken meanwhile: the folder is writable all the same
        return
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot create files in {folder} ({e.strerror or e})") from e
    os.close(fd)
    os.unlink(folder / name)


def _check_creatable(path: Path, flag: str) -> None:
    """``path`` does not exist: the nearest existing folder above it takes a new entry of the first missing
    name (the writers create the missing folders), and the deeper names are within the file-name limit."""
    missing = [path.name]
    base = path.absolute().parent
    while _stat(base, flag) is None and base != base.parent:
        missing.insert(0, base.name)
        base = base.parent
    if not base.is_dir():
        raise CliError(f"{flag} {path}: {base} is not a folder")
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows)
        limit = 255
    too_long = [m for m in missing if len(os.fsencode(m)) > limit]
    if too_long:
        raise CliError(f"{flag} {path}: file name too long ({len(os.fsencode(too_long[0]))} bytes, the limit is "
                       f"{limit})")
    _probe(base, missing[0], path, flag)


def check_writable_file(path: str | Path | None, flag: str) -> None:
    """Fail early (before hours of work) if the file ``path`` could not be written at the end.

    An existing ``path`` must be a regular file (not a folder, nor a named pipe that would block) that opens
    for writing, in a folder that takes new files (the atomic writers rename a temporary file over it). A new
    ``path`` must be creatable (:func:`_check_creatable`). Checked by doing, not by permission bits: a probe
    file is created and removed. ``None`` (option not given) passes.
    """
    if path is None:
        return
    path = Path(path)
    st = _stat(path, flag)
    if st is None:
        _check_creatable(path, flag)
        return
    if stat.S_ISDIR(st.st_mode):
        raise CliError(f"{flag} {path} is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise CliError(f"{flag} {path} exists and is not a regular file (a named pipe, socket or device)")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # changes nothing in the file
    except OSError as e:
        raise CliError(f"{flag} {path}: file is not writable ({e.strerror or e})") from e
    _probe(path.absolute().parent, f".{path.name[:100]}.os2d-probe-{os.getpid()}", path, flag)


def check_writable_dir(path: str | Path | None, flag: str) -> None:
    """Fail early if the folder ``path`` could not be created or written: it is a folder that takes new files,
    or can be made (:func:`_check_creatable`). ``None`` passes."""
    if path is None:
        return
    path = Path(path)
    st = _stat(path, flag)
    if st is None:
        _check_creatable(path, flag)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise CliError(f"{flag} {path} exists and is not a folder")
    _probe(path, f".os2d-probe-{os.getpid()}", path, flag)


__all__ = [
    "CliError", "DeprecatedAlias", "add_class_args", "add_inference_args", "add_model_args", "add_output_dir",
    "add_output_file", "add_quiet", "add_second_look_args", "check_writable_dir", "check_writable_file", "classes_from_args", "new_weights_file",
    "device_from_args",
    "inference_config", "parse_class_arg", "parse_image_size", "read_classes_csv", "read_classes_folder", "read_image_list", "register_classes", "warn",
]
