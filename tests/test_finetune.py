"""``os2d finetune`` end to end on generated photos (the shipped default model, a few steps), the held-out split,
the recipe, resume and the user errors."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
from pathlib import Path

import pytest
import yaml
from _train_data import torch_threads
from helpers import scene_with, textured_object

from os2d.apps.cli.main import build_parser, main
from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord
from os2d.data.split import held_out_count, split_held_out
from os2d.train.finetune import DEFAULT_STEPS, finetune_config

OBJ = (128, 160)
SCENE = (384, 288)  # objects of about the class-image size: the automatic scale stays near the probe (fast)
# (image, class, top-left corners): 6 photos, 2 classes, one photo with both
PHOTOS = [("p0.png", "A", [(10, 10), (240, 120)]), ("p1.png", "A", [(120, 60)]), ("p2.png", "A", [(250, 20)]),
          ("p3.png", "B", [(40, 100)]), ("p4.png", "B", [(200, 100), (20, 10)]),
          ("p5.png", "AB", [(20, 40), (230, 110)])]


def _write_photos(root: Path) -> tuple[Path, Path]:
    objs = {"A": textured_object(OBJ, seed=3), "B": textured_object(OBJ, seed=7)}
    root.mkdir(parents=True, exist_ok=True)
    rows = ["image,class,x1,y1,x2,y2"]
    for i, (name, classes, corners) in enumerate(PHOTOS):
        scene = scene_with(objs[classes[0]], [], size=SCENE, seed=i)
        for k, (x, y) in enumerate(corners):
            cls = classes[k % len(classes)]
            scene.paste(objs[cls], (x, y))
            rows.append(f"{name},{cls},{x},{y},{x + OBJ[0]},{y + OBJ[1]}")
        scene.save(root / name)
    for cls, img in objs.items():
        img.save(root / f"class_{cls}.png")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.csv").write_text("name,path\nA,class_A.png\nB,class_B.png\n")
    return root / "boxes.csv", root / "classes.csv"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), torch_threads(1):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _args(boxes: Path, classes: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--boxes", str(boxes), "--classes", str(classes), "--output-dir", str(out), "-q", *extra]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_photos(tmp_path_factory.mktemp("finetune_photos"))


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One fine-tune of 4 steps from the default model (the expensive part, shared by the tests)."""
    out = tmp_path_factory.mktemp("finetune_run") / "run"
    rc, stdout, stderr = _run(_args(*photos, out, "--steps", "4"))
    assert rc == 0, stderr
    return out, stdout


def _images(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return {row["image"] for row in csv.DictReader(f)}


def test_finetune_writes_the_split_models_and_the_table(run, photos):
    out, stdout = run
    train, held = _images(out / "train.csv"), _images(out / "heldout.csv")
    everything = {os.path.abspath(photos[0].parent / p[0]) for p in PHOTOS}
    assert train.isdisjoint(held) and train | held == everything
    assert len(held) == held_out_count(6, 0.3) == 2
    with (out / "train.csv").open(newline="") as f:
        assert {row["class"] for row in csv.DictReader(f)} == {"A", "B"}  # every class is trained
    from os2d.detector import Detector

    for name in ("best.pt", "final.pt"):
        Detector.from_weights(out / name)
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["held-out", "before", "(default)"] and "after (step 4)" in lines[0]
    assert [ln.split()[0] for ln in lines[1:5]] == ["mAP@0.50", "recall@0.50", "AP", "AP"]
    assert lines[3].split()[:2] == ["AP", "A"] and lines[4].split()[:2] == ["AP", "B"]
    assert lines[5].startswith("time: ") and " min (4 steps in this run;" in lines[5]
    assert ("use it: os2d detect" in stdout and "best.pt" in stdout) or "is NOT better" in stdout


def test_the_run_uses_the_recipe_and_evaluates_at_default_settings(run):
    out, _ = run
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["init"]["weights"] == "default" and config["max_iter"] == config["eval_every"] == 4
    assert config["freeze"]["backbone"] and config["freeze"]["backbone_train_last"] > 0
    assert config["eval"]["inference"]["image_size"] == "auto" and config["eval"]["inference"]["scales"] == [1.0]
    assert config["sampler"]["class_batch_size"] == 2 and config["optim"]["name"] == "adamw"
    assert config["loss"]["loc_weight"] > 0  # keeps the TransformNet's boxes on the objects
    assert config["val_data"]["annotations"] == str((out / "heldout.csv").absolute())


def test_resume_trains_on_to_more_steps(run, photos, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run[0], copy)
    rc, stdout, stderr = _run(_args(*photos, copy, "--steps", "5", "--resume"))
    assert rc == 0, stderr
    assert "after (step 5)" in stdout and "(1 steps in this run;" in stdout


@pytest.mark.parametrize(("extra", "message"), [
    ([], "already holds a fine-tune: add --resume"),
    (["--resume", "--seed", "1"], "--resume: "),
    (["--resume", "--steps", "2"], "--steps 2: the run in"),
])
def test_an_existing_run_is_resumed_only_as_it_was_started(run, photos, extra, message):
    rc, _, err = _run(_args(*photos, run[0], *extra))
    assert rc == 2 and err.startswith("os2d: error: ") and message in err and err.count("\n") == 1


def _one_line_error(argv: list[str]) -> str:
    rc, _, err = _run(argv)
    assert rc == 2 and err.startswith("os2d: error: ") and err.count("\n") == 1, err
    return err


def test_user_errors_are_one_line_exit_2(photos, tmp_path):
    boxes, classes = photos
    out = tmp_path / "out"
    assert "--boxes: file not found" in _one_line_error(_args(tmp_path / "missing.csv", classes, out))
    assert "--classes: file not found" in _one_line_error(_args(boxes, tmp_path / "missing.csv", out))
    single = tmp_path / "single.csv"
    single.write_text(f"image,class,x1,y1,x2,y2\n{boxes.parent / 'p0.png'},A,10,10,138,170\n")
    err = _one_line_error(_args(single, classes, out))
    assert "1 annotated image(s); fine-tuning needs at least 2" in err
    only_a = tmp_path / "only_a.csv"
    only_a.write_text("".join(ln for ln in boxes.read_text().splitlines(keepends=True) if ",B," not in ln))
    assert "without any box in --boxes: B" in _one_line_error(_args(only_a, classes, out, "--image-dir",
                                                                     str(boxes.parent)))
    assert "--held-out is the share" in _one_line_error(_args(boxes, classes, out, "--held-out", "1"))
    assert "--steps must be at least 1" in _one_line_error(_args(boxes, classes, out, "--steps", "0"))
    assert "no fine-tune to resume" in _one_line_error(_args(boxes, classes, out, "--resume"))
    assert not out.exists()  # every check comes before any file is written


# --------------------------------------------------------------------------------- the split and the recipe


def _dataset(classes_per_image: list[list[int]], num_classes: int) -> DetectionDataset:
    images = [ImageRecord(f"im{i}", Path(f"im{i}.png"), 100, 100, [[0, 0, 10, 10]] * len(c), c, [False] * len(c))
              for i, c in enumerate(classes_per_image)]
    return DetectionDataset("d", images, [ClassRecord(str(k), str(k), []) for k in range(num_classes)])


def test_split_is_seeded_by_image_and_keeps_every_class_in_training():
    ds = _dataset([[0], [0], [1], [1], [2], [2], [0, 1], [2], [0], [1]], 3)
    for seed in range(20):
        split = split_held_out(ds, 0.3, seed)
        assert split == split_held_out(ds, 0.3, seed)
        assert len(split.held_out) == 3 and set(split.train) | set(split.held_out) == {f"im{i}" for i in range(10)}
        assert not split.classes_not_trained and not split.classes_not_held_out  # one of each class held out
    assert len({split_held_out(ds, 0.3, s).held_out for s in range(20)}) > 1


def test_split_reports_what_it_cannot_cover():
    split = split_held_out(_dataset([[0], [1]], 2), 0.5, 0)
    assert len(split.held_out) == 1 and len(split.classes_not_trained) == 1  # one image per class: one untrained
    assert held_out_count(2, 0.01) == 1 and held_out_count(10, 0.99) == 9
    with pytest.raises(ValueError, match="at least 2"):
        split_held_out(_dataset([[0]], 1))


def test_recipe_config():
    from os2d.config import ModelConfig
    from os2d.data.spec import DatasetSpec

    spec = DatasetSpec(format="simple_csv", annotations="b.csv", classes="c.csv")
    for steps, classes in ((3, 1), (200, 20)):
        c = finetune_config(ModelConfig(backbone="efficientnet_lite0"), train_data=spec, val_data=spec,
                            num_classes=classes, output_dir="o", steps=steps)
        assert c.max_iter == c.eval_every == steps and c.checkpoint_every <= steps
        assert c.schedule.warmup_iters <= steps // 5 and c.sampler.class_batch_size == min(classes, 6)
        assert c.eval.inference.image_size == "auto" and c.eval.at_start and c.eval.per_class
    with pytest.raises(ValueError):
        finetune_config(ModelConfig(), train_data=spec, val_data=spec, num_classes=1, output_dir="o", steps=0)


def test_help_states_the_default_steps(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    assert f"(default {DEFAULT_STEPS}:" in capsys.readouterr().out
