"""``os2d weights calibrate``: fit the confidence of a model's detections on evaluated validation data and write
the weights with it (:mod:`os2d.calibration`); ``--check`` measures a calibrated model on other evaluations."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from os2d.apps.cli.common import CliError, add_output_file, add_quiet, check_writable_file, new_weights_file

if TYPE_CHECKING:
    from os2d.calibration import ScoreKind


def _runs(folders: list[str], weights: str | None) -> list[Any]:
    """The ``os2d eval`` folders, read back; each must be an os2d run of ``weights`` (when given)."""
    from os2d.evaluation.runs import EvalRunError, load_eval_run

    runs = []
    for folder in folders:
        try:
            run = load_eval_run(folder)
        except EvalRunError as e:
            raise CliError(str(e)) from e
        if run.method != "os2d":
            raise CliError(f"{folder}: an evaluation of method {run.method!r}; calibration is of os2d models")
        if weights is not None and run.weights != weights:
            raise CliError(f"{folder} was evaluated with --weights {run.weights}, not {weights}: evaluate those "
                           "weights (os2d eval --weights ...) and calibrate on that")
        runs.append(run)
    return runs


SCORE_FIELD_ABSENT = (0.0, 0.0, 0.0, 0.0, float("inf"), 0.0)  # os2d.calibration.SCORE_FIELDS of runs made before they existed


def _score_kind(runs: list[Any]) -> ScoreKind:
    """The ``InferenceConfig`` re-scoring fields (``os2d.calibration.SCORE_FIELDS``) all ``runs`` were evaluated with (runs made
    before a field existed had it off; the rivals count only with a second look, their colour only with rivals);
    runs that differ cannot be mixed."""
    from os2d.calibration import SCORE_FIELDS, score_kind, score_kind_name

    def kind(run: Any) -> ScoreKind:
        inference = (run.config or {}).get("inference") or {}
        return score_kind(*(inference.get(k, d) for k, d in zip(SCORE_FIELDS, SCORE_FIELD_ABSENT, strict=True)))

    kinds = {kind(run) for run in runs}
    if len(kinds) > 1:
        raise CliError(f"these evaluations re-scored differently ({', '.join(score_kind_name(*k) for k in sorted(kinds))}):"
                       " their scores are not of one kind")
    return kinds.pop() if kinds else score_kind(0.0, 0.0)


def _labelled(run: Any) -> tuple[Any, Any]:
    from os2d.calibration import label_detections

    return label_detections(run.detections, run.images)


def _table(rows: list[tuple[str, Any, Any]], calibration: Any) -> list[str]:
    """One line per set: detections, correct, ECE of the raw score (clipped to [0, 1]) and of the confidence,
    precision and recall share kept at the threshold."""
    import numpy as np
    import torch

    from os2d.calibration import expected_calibration_error

    lines = ["| set | detections | correct | ECE raw score | ECE confidence | precision >= thr | correct kept >= thr |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, scores, hits in rows:
        conf = calibration(torch.from_numpy(scores)).double().numpy()
        kept = conf >= calibration.threshold
        prec = f"{float(hits[kept].mean()):.2f}" if kept.any() else "- (none kept)"
        lines.append(f"| {name} | {len(scores)} | {int(hits.sum())} | "
                     f"{expected_calibration_error(np.clip(scores, 0, 1), hits):.3f} | "
                     f"{expected_calibration_error(conf, hits):.3f} | {prec} | "
                     f"{int(hits[kept].sum())}/{int(hits.sum())} |")
    return lines


def _plot(path: str, rows: list[tuple[str, Any, Any]], calibration: Any, title: str) -> None:
    import torch

    from os2d.calibration import reliability
    from os2d.evaluation.plots import plot_reliability

    curves = {name: reliability(calibration(torch.from_numpy(s)).double().numpy(), h) for name, s, h in rows}
    plot_reliability(curves, path, title=title)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from os2d.calibration import SCORE_FIELDS, CalibrationError, fit_calibration, score_kind_name
    from os2d.weights import load_model, save_checkpoint

    if not 0 < args.precision < 1:
        raise CliError("--precision must be between 0 and 1")
    if args.check:
        return _check(args)
    out = new_weights_file(args, " (or --check DIR ... to measure)")
    check_writable_file(args.plot, "--plot")
    runs = _runs(args.from_eval, args.weights)
    kind = _score_kind(runs)
    rows = [(run.folder.name, *_labelled(run)) for run in runs]
    scores = np.concatenate([r[1] for r in rows])
    hits = np.concatenate([r[2] for r in rows])
    fitted_on = (f"weights {args.weights}; " + ", ".join(f"{name} ({len(s)} detections)" for name, s, _ in rows)
                 + f"; IoU 0.5; precision target {args.precision}; {score_kind_name(*kind)} scores")
    try:
        calibration = fit_calibration(scores, hits, precision_target=args.precision, fitted_on=fitted_on,
                                      **dict(zip(SCORE_FIELDS, kind, strict=True)))
    except CalibrationError as e:
        raise CliError(str(e)) from e
    model = load_model(args.weights)
    model.calibration = calibration
    save_checkpoint(out, model, half=not args.float32)
    if args.plot:
        _plot(args.plot, rows, calibration, f"{args.weights}: fitting data")
    if not args.quiet:
        print("\n".join(_table([*rows, ("all", scores, hits)], calibration)))
        print(f"confidence = sigmoid({calibration.a:.4f} * score + {calibration.b:.4f}); default threshold "
              f"{calibration.threshold:.4f} (precision >= {args.precision} on these detections; score "
              f"{calibration.threshold_score:.4f})")
        print(f"wrote {out} (use it: --weights {out})" + (f"; plot {args.plot}" if args.plot else ""))
    return 0


def _check(args: argparse.Namespace) -> int:
    """``--check DIR ...``: the calibration of ``--weights`` measured on evaluations of those weights."""
    from os2d.weights import load_model

    calibration = load_model(args.weights).calibration
    if calibration is None:
        raise CliError(f"{args.weights} has no calibration: make one with os2d weights calibrate ... --output")
    check_writable_file(args.plot, "--plot")
    runs = _runs(args.check, args.weights_name or args.weights)
    from os2d.calibration import score_kind_name

    kind = _score_kind(runs)
    if not calibration.applies_to(*kind):
        raise CliError(f"{args.weights}'s calibration was fitted on {calibration.score_kind} scores, these "
                       f"evaluations have {score_kind_name(*kind)} scores "
                       "(--colour-rescore, --verify-rescore, --verify-rivals, --verify-colour, --verify-colour-margin)")
    rows = [(run.folder.name, *_labelled(run)) for run in runs]
    if args.plot:
        _plot(args.plot, rows, calibration, "held-out data")
    if not args.quiet:
        print(f"calibration of {args.weights}: fitted on {calibration.fitted_on}")
        print("\n".join(_table(rows, calibration)))
    return 0


def add_subparser(wsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``os2d weights calibrate`` (added by :func:`os2d.apps.cli.weights.add_parser`)."""
    q = wsub.add_parser("calibrate", help="fit the confidence of a model's detections on evaluated validation data "
                                          "and write the weights with it; or --check it on other evaluations")
    q.add_argument("weights", help="weights name or checkpoint path (what the evaluations ran with)")
    q.add_argument("--from-eval", nargs="+", metavar="DIR", default=[],
                   help="folders written by os2d eval on validation data (never the data you report on)")
    q.add_argument("--check", nargs="+", metavar="DIR",
                   help="measure the calibration WEIGHTS carries on these os2d eval folders (ECE, precision)")
    q.add_argument("--weights-name", help="with --check: the --weights the evaluations were run with, when it "
                                          "differs from WEIGHTS (e.g. default vs the file)")
    q.add_argument("--precision", type=float, default=0.9,
                   help="the default threshold is the lowest confidence with this precision (default 0.9)")
    q.add_argument("--plot", metavar="PNG", help="write a reliability diagram")
    add_output_file(q, metavar="OUT.pt", required=False, help="the calibrated weights file to write")
    q.add_argument("--float32", action="store_true", help="keep float32 tensors (default float16, as compact)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_quiet(q)
    q.set_defaults(func=cmd_calibrate)


__all__ = ["add_subparser", "cmd_calibrate"]
