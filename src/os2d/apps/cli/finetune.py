"""``os2d finetune``: fine-tune a trained model (the shipped default) on a few annotated photos, on a CPU.

    os2d finetune --boxes boxes.csv --classes classes.csv --output-dir my-model
    os2d finetune --boxes boxes.csv --classes classes.csv --output-dir my-model --resume   # after an interrupt

The photos are split by image into training and held-out parts (``train.csv``, ``heldout.csv`` and
``classes.csv`` in the output folder), :func:`os2d.train.finetune.finetune_config` makes the training config,
the trainer (:mod:`os2d.train.trainer`) runs it and evaluates the held-out photos before the first and after
the last step, and a before/after table says whether the fine-tuned model is better there and which file to
use.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from os2d.apps.cli.common import CliError, add_output_dir, add_quiet, check_writable_dir, warn

SPLIT_FILES = ("train.csv", "heldout.csv", "classes.csv")
# on --resume these come from the options, not from the checkpoint: --steps trains on to a new length, and a
# moved run folder still resumes (its split files are checked by content)
FROM_OPTIONS_ON_RESUME = ("max_iter", "eval_every", "checkpoint_every", "output_dir", "train_data", "val_data")
MAX_CLASS_ROWS = 10  # per-class AP rows in the table up to this many classes


def _check_options(args: argparse.Namespace) -> None:
    if args.steps is not None and args.steps < 1:
        raise CliError(f"--steps must be at least 1, got {args.steps}")
    if not 0.0 < args.held_out < 1.0:
        raise CliError(f"--held-out is the share of images held out, between 0 and 1; got {args.held_out}")
    for flag, path in (("--boxes", args.boxes), ("--classes", args.classes)):
        if not Path(path).is_file():
            raise CliError(f"{flag}: file not found: {path}")
    if args.image_dir is not None and not Path(args.image_dir).is_dir():
        raise CliError(f"--image-dir: folder not found: {args.image_dir}")


def _checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The newest checkpoint of the run in ``out`` with ``--resume``; a run there without it is an error."""
    from os2d.train import checkpoint as ckpt_io

    found = ckpt_io.list_checkpoints(out)
    if resume and not found:
        raise CliError(f"--resume: no fine-tune to resume in {out} (no checkpoints/step_*.pt); run without --resume")
    if found and not resume:
        raise CliError(f"{out} already holds a fine-tune: add --resume to continue it, or choose another --output-dir")
    return found[-1][1] if found else None


def _load_dataset(args: argparse.Namespace):
    from os2d.data.spec import DatasetSpec, load_dataset

    spec = DatasetSpec(format="simple_csv", annotations=args.boxes, classes=args.classes, image_dir=args.image_dir)
    return load_dataset(spec)  # AnnotationError (an Os2dError): the messages name the file and row


def check_dataset(dataset: Any) -> None:
    """What a fine-tune needs: at least 2 annotated images (one to train on, one held out) and a box of every
    class (a class without boxes cannot be learnt or measured)."""
    annotated = sum(1 for im in dataset.images if im.num_boxes)
    if annotated < 2:
        raise CliError(f"{dataset.name}: {annotated} annotated image(s); fine-tuning needs at least 2 (one to "
                       "train on, one held out to check the result), better 10 or more")
    boxes = {int(c) for im in dataset.images for c in im.labels.tolist()}
    empty = [c.name for i, c in enumerate(dataset.classes) if i not in boxes]
    if empty:
        raise CliError(f"class(es) without any box in --boxes: {', '.join(empty)}; annotate them or remove them "
                       "from --classes")


def _check_part(dataset: Any, image_ids: tuple[str, ...], part: str) -> None:
    """A part of the split needs a box that is not difficult (the image scale and the AP are computed on them)."""
    ids = set(image_ids)
    if not any((~im.difficult).any() for im in dataset.images if im.image_id in ids):
        raise CliError(f"every box of the {part} images ({', '.join(image_ids)}) is marked difficult; annotate "
                       "more images or mark fewer boxes difficult")


def _write_split(dataset: Any, split: Any, out: Path, *, resuming: bool) -> dict[str, Path]:
    """Write train.csv, heldout.csv and classes.csv; on resume check that they are what the run used."""
    from os2d.data.split import boxes_csv_text, classes_csv_text, write_text

    texts = dict(zip(SPLIT_FILES, (boxes_csv_text(dataset, split.train), boxes_csv_text(dataset, split.held_out),
                                   classes_csv_text(dataset)), strict=True))
    paths = {name: out / name for name in SPLIT_FILES}
    for name, text in texts.items():
        if not resuming:
            write_text(paths[name], text)
        elif not paths[name].is_file() or paths[name].read_text(encoding="utf-8") != text:
            raise CliError(f"--resume: {paths[name]} differs from the split of these --boxes/--classes/--held-out/"
                           "--seed; resume with the options the run started with, or choose another --output-dir")
    return paths


def _train_config(args: argparse.Namespace, dataset: Any, paths: dict[str, Path], out: Path,
                  checkpoint: Path | None):
    """The run's TrainConfig (from the options; on resume checked against the one saved in the checkpoint)."""
    from os2d.data.spec import DatasetSpec
    from os2d.train import checkpoint as ckpt_io
    from os2d.train.config import train_config_from_dict, train_config_to_dict
    from os2d.train.finetune import DEFAULT_STEPS, finetune_config
    from os2d.weights import load_model

    state = ckpt_io.load_training_checkpoint(checkpoint) if checkpoint is not None else None
    saved = state["train_config"] if state is not None else None
    steps = args.steps or (saved["max_iter"] if saved else DEFAULT_STEPS)

    def spec(name: str, label: str) -> DatasetSpec:
        return DatasetSpec(format="simple_csv", annotations=str(paths[name].absolute()),
                           classes=str(paths["classes.csv"].absolute()), name=label)

    model = load_model(args.weights).config  # WeightsError (an Os2dError): unknown name, missing file

    def config(n: int):
        try:
            return finetune_config(model, train_data=spec("train.csv", "train"), val_data=spec("heldout.csv", "heldout"),
                                   num_classes=len(dataset.classes), output_dir=str(out.absolute()),
                                   weights=args.weights, steps=n, seed=args.seed)
        except ValueError as e:
            raise CliError(str(e)) from e

    if state is None:
        return config(steps)
    now = train_config_to_dict(config(steps))
    changed = [k for k, v in _comparable(now).items() if v != _comparable(saved).get(k)]
    if changed:
        raise CliError(f"--resume: the run in {out} was started with other settings ({', '.join(changed)}); resume "
                       "with the options it started with, or choose another --output-dir")
    if steps < state["step"]:
        raise CliError(f"--steps {steps}: the run in {out} has already done {state['step']} steps")
    return train_config_from_dict({**saved, **{k: now[k] for k in FROM_OPTIONS_ON_RESUME}})


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config without what --resume takes from the options (and the warm-up, set by the first --steps)."""
    d = {k: v for k, v in config.items() if k not in FROM_OPTIONS_ON_RESUME}
    d["schedule"] = {**d.get("schedule", {}), "warmup_iters": None}
    return d


def _evaluations(out: Path) -> list[dict[str, Any]]:
    from os2d.train.run_log import JSONL_NAME, read_log

    return [r for r in read_log(out / JSONL_NAME) if r.get("kind") == "eval" and r.get("split", "val") == "val"]


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def format_report(before: dict[str, Any], after: dict[str, Any], *, weights: str, class_names: list[str]) -> str:
    """The before/after table of two held-out evaluations (eval records of the training log)."""
    rows = [("mAP@0.50", before.get("mAP@0.50"), after.get("mAP@0.50")),
            ("recall@0.50", before.get("recall@0.50"), after.get("recall@0.50"))]
    if len(class_names) <= MAX_CLASS_ROWS:
        b_ap, a_ap = before.get("ap_per_class") or {}, after.get("ap_per_class") or {}
        rows += [(f"AP {name}", b_ap.get(name), a_ap.get(name)) for name in class_names]
    heads = (f"before ({weights})", f"after (step {after['step']})")
    w0, w1, w2 = max(len(r[0]) for r in [("held-out",), *rows]), len(heads[0]), len(heads[1])
    lines = [f"{'held-out':<{w0}}  {heads[0]:>{w1}}  {heads[1]:>{w2}}"]
    lines += [f"{name:<{w0}}  {_pct(b):>{w1}}  {_pct(a):>{w2}}" for name, b, a in rows]
    return "\n".join(lines)


def _verdict(best: dict[str, Any] | None, before: dict[str, Any], after: dict[str, Any], out: Path,
             args: argparse.Namespace) -> list[str]:
    """Which weights to use: ``best.pt`` when the trainer kept a fine-tuned step as the best on the held-out
    images (strictly better mAP than the start), else the starting weights."""
    from os2d.train import checkpoint as ckpt_io

    if best is not None and best["step"] > 0:
        return [f"better on the held-out images: {out / ckpt_io.BEST_MODEL} (step {best['step']}; final.pt is the "
                "last step)",
                f"use it: os2d detect PHOTO.jpg --classes {args.classes} --weights {out / ckpt_io.BEST_MODEL} "
                "--output detections.json"]
    return [f"the fine-tuned model is NOT better on the held-out images (mAP@0.50 {_pct(before.get('mAP@0.50'))} "
            f"before, {_pct(after.get('mAP@0.50'))} after): keep using --weights {args.weights}",
            f"({out / ckpt_io.FINAL_MODEL} is the fine-tuned model; more photos, more --steps, or boxes on every "
            "object of each photo may help)"]


def cmd_finetune(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _check_options(args)
    out = Path(args.output_dir)
    check_writable_dir(out, "--output-dir")
    checkpoint = _checkpoint_to_resume(out, args.resume)
    from os2d.data.split import split_held_out

    dataset = _load_dataset(args)
    check_dataset(dataset)
    split = split_held_out(dataset, args.held_out, args.seed)
    _check_part(dataset, split.train, "training")
    _check_part(dataset, split.held_out, "held-out")
    paths = _write_split(dataset, split, out, resuming=checkpoint is not None)
    config = _train_config(args, dataset, paths, out, checkpoint)
    for name in split.classes_not_trained:
        warn(f"class {name!r}: every image with it is held out, so it is not trained (add photos of it)")
    if not args.quiet:
        for name in split.classes_not_held_out:
            print(f"class {name!r} is in no held-out image: its AP is not measured", file=sys.stderr)
        print(f"os2d finetune: {len(split.train)} training images, {len(split.held_out)} held out "
              f"({paths['train.csv']}, {paths['heldout.csv']}); {config.max_iter} steps from {args.weights} -> {out}"
              + (f" (resuming {checkpoint.name})" if checkpoint else ""), file=sys.stderr)

    from os2d.train.trainer import train

    try:
        summary = train(config, resume=checkpoint, progress=not args.quiet)
    except KeyboardInterrupt:
        print("os2d finetune: to continue, run the same command with --resume", file=sys.stderr)
        raise
    evals = _evaluations(out)
    if not evals:  # the trainer evaluates at step 0 and at the last step
        raise CliError(f"{out}: no held-out evaluation in the training log")
    before, after = evals[0], evals[-1]
    print(format_report(before, after, weights=args.weights, class_names=dataset.class_names))
    print(f"time: {(time.perf_counter() - t0) / 60:.1f} min ({summary.steps - summary.start_step} steps in this run; "
          "held-out images evaluated at the default inference settings, image size auto, as os2d detect)")
    print("\n".join(_verdict(summary.best, before, after, out, args)))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``finetune``."""
    p = sub.add_parser("finetune", help="fine-tune the default model on a few annotated photos (minutes on a CPU); "
                                        "before/after table on held-out photos",
                       description="Split the photos by image into training and held-out parts, fine-tune the "
                                   "model on the training part (backbone frozen but for its last blocks), and "
                                   "compare the model before and after on the held-out part.")
    g = p.add_argument_group("your photos (the files of os2d eval --boxes/--classes)")
    g.add_argument("--boxes", required=True, metavar="CSV", help="boxes CSV image,class,x1,y1,x2,y2[,difficult] "
                                                                 "(pixels)")
    g.add_argument("--classes", required=True, metavar="CSV", help="class CSV name,path: one picture per class (or "
                                                                   "several rows per name)")
    g.add_argument("--image-dir", metavar="DIR", help="root of the image paths of --boxes (default: its folder)")
    p.add_argument("--weights", default="default", help="the model to start from (weights name or file)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="training steps of 2 patches each (default 200: a few minutes on a laptop CPU)")
    p.add_argument("--held-out", type=float, default=0.3, metavar="SHARE",
                   help="share of the images held out to judge the result (default 0.3; at least one image)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the training batches")
    add_output_dir(p, help="folder for train.csv, heldout.csv, classes.csv, config.yaml, logs, checkpoints, "
                           "best.pt and final.pt")
    p.add_argument("--resume", action="store_true", help="continue the interrupted fine-tune in --output-dir")
    add_quiet(p)
    p.set_defaults(func=cmd_finetune)


__all__ = ["add_parser", "check_dataset", "cmd_finetune", "format_report"]
