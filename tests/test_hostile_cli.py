"""Hostile and careless input on the command line and in files (issue 16): every case runs through the real
``python -m os2d`` entry point and must end in one line ``os2d: error: ...`` with exit code 2 (or exit code 1
and one error line per failed image, the others processed), with no traceback, no hang and nothing lost.

Each subprocess costs ~2 s of torch import, so cases are batched: one interpreter runs the ``os2d`` module
(``runpy``, exactly what ``python -m os2d`` runs) once per case, capturing each case's exit code, stdout and
stderr, and optionally runs a setup step between cases or records file digests after one. Two cases also run
alone as ``[sys.executable, "-m", "os2d", ...]``.

Tests run as root here, which ignores permission bits: most "cannot write" cases use targets no process can
write (a path under a regular file, an existing folder as a file, a FIFO, ``/proc``); the read-only folder case
runs as a normal user, or as root under ``setpriv`` without the capabilities that override permission bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import scene_with, textured_object

LONG = "a" * 300  # over the 255-byte file-name limit
IMAGE = ["--image-size", "256", "-q"]

_DRIVER = r"""
import contextlib, hashlib, io, json, logging, os, runpy, sys, traceback
cases = json.load(sys.stdin)
results = []
for case in cases:
    if "python" in case:
        exec(case["python"], {})
        results.append(None)
        continue
    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # main() configures logging to this case's stderr
    sys.argv = ["os2d", *case["argv"]]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("os2d", run_name="__main__", alter_sys=True)
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
    digests = {f: (hashlib.sha256(open(f, "rb").read()).hexdigest() if os.path.isfile(f) else None)
               for f in case.get("watch", [])}
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "digests": digests})
print(json.dumps(results))
"""


def run_batch(cwd: Path, cases: list[dict[str, Any]], timeout: float = 300,
              prefix: list[str] | None = None) -> list[dict[str, Any]]:
    """Run ``os2d`` once per case in one interpreter (see the module docstring); a hang fails the test."""
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", _DRIVER], input=json.dumps(cases), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_one_line_error(res: dict[str, Any], *fragments: str, rc: int = 2) -> None:
    err = res["err"]
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("os2d: warning: ")]  # deprecated flags
    assert res["rc"] == rc and len(lines) == 1 and lines[0].startswith("os2d: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (to prove that a refused command wrote nothing)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class pictures, a folder of images with the same name in two subfolders, a file ``f``, a folder
    ``adir``, named pipes, a checkpoint and malformed checkpoints and galleries."""
    from os2d.detector import Detector
    from os2d.weights import load_model, save_checkpoint

    d = tmp_path_factory.mktemp("hostile")
    obj = textured_object((160, 192))
    obj.save(d / "thing.png")
    textured_object((120, 120), seed=5).save(d / "other.png")
    for sub, pos in (("d1", (96, 64)), ("d2", (200, 120))):
        (d / "imgs" / sub).mkdir(parents=True)
        scene_with(obj, [pos]).save(d / "imgs" / sub / "x.jpg")
    scene_with(obj, [(96, 64)], seed=3).save(d / "scene.jpg")
    (d / "f").write_text("a file, not a folder\n")
    (d / "adir").mkdir()
    os.mkfifo(d / "pipe.jpg")
    (d / "fifo_imgs").mkdir()
    scene_with(obj, [(50, 50)], seed=4).save(d / "fifo_imgs" / "a.jpg")
    os.mkfifo(d / "fifo_imgs" / "b.jpg")

    model = load_model("default")
    save_checkpoint(d / "w.pt", model)
    ckpt = torch.load(d / "w.pt", weights_only=True)
    torch.save({k: v for k, v in ckpt.items() if k != "model"}, d / "nomodel.pt")
    detector = Detector(model)
    detector.add_class("thing", d / "thing.png")
    detector.save_gallery(d / "g.pt")
    gallery = torch.load(d / "g.pt", weights_only=True)
    torch.save({k: v for k, v in gallery.items() if k != "kernels"}, d / "g_nokernels.pt")
    torch.save({**gallery, "view_class": torch.tensor([3])}, d / "g_badlabel.pt")
    torch.save({**gallery, "class_names": os.system}, d / "g_unsafe.pt")  # unpickling would need code
    return d


# ------------------------------------------------------------------------------------- 1, 11: bad option values

def test_bad_option_values_are_refused_in_one_line_before_any_work(work: Path) -> None:
    (work / "bad_device.yaml").write_text("device: bogus\n")
    detect = ["detect", "scene.jpg", "--class", "thing=thing.png", "-o", "opt.json", "-q"]
    evaluate = ["eval", "--boxes", "boxes.csv", "--classes", "classes.csv", "--output-dir", "ev"]
    cases = [
        (detect + ["--scales", "inf"], "scales must be positive finite"),
        (detect + ["--scales", "nan"], "scales must be positive finite"),
        (detect + ["--device", "bogus"], "--device bogus: unknown device"),
        (detect + ["--image-size", "100000"], "over the limit of 100,000,000 pixels"),
        (detect + ["--image-size", "8000", "--scales", "1", "1.6"], "12800 x 12800"),
        (detect + ["--score-threshold", "nan"], "score_threshold must be a finite number"),
        (detect + ["--nms-iou", "nan"], "nms_iou_threshold must be in [0, 1]"),
        (evaluate + ["--iou", "2"], "--iou: the IoU threshold must be in (0, 1], got 2.0"),
        (evaluate + ["--iou", "0"], "(0, 1]"),
        (evaluate + ["--image-size", "20000"], "over the limit"),
        (["serve", "--port", "99999"], "--port must be in 0..65535"),
        (["serve", "--port", "8000", "--device", "bogus", "--data-dir", "srv"], "unknown device"),
        (["train", "--config", "bad_device.yaml", "--output-dir", "run"], "device must be auto, cpu, cuda"),
        (["train", "--config", "bad_device.yaml", "device=cuda:x", "--output-dir", "run"], "'cuda:x'"),
    ]
    before = tree(work)
    results = run_batch(work, [{"argv": argv} for argv, _ in cases])
    for (_, fragment), res in zip(cases, results, strict=True):
        assert_one_line_error(res, fragment)
    assert tree(work) == before  # no output file, folder or probe file left behind


def test_library_refuses_the_same_values() -> None:
    from os2d.config import InferenceConfig
    from os2d.evaluation.harness import check_iou_threshold
    from os2d.train.config import TrainConfig

    for bad in ({"scales": (float("inf"),)}, {"score_threshold": float("nan")}, {"image_size": 100_000},
                {"image_size": 8000, "scales": (1.0, 1.6)}):
        with pytest.raises(ValueError):
            InferenceConfig(**bad)
    assert InferenceConfig(image_size=10_000).image_size == 10_000  # the bound itself is allowed
    for iou in (0.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            check_iou_threshold(iou)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="bogus")
    assert TrainConfig(device="cuda:1").device == "cuda:1"


# ------------------------------------------------------------------------------- 2, 5: unwritable output paths

def test_unwritable_or_odd_outputs_are_refused_before_any_work(work: Path) -> None:
    detect = ["detect", "imgs", "--class", "thing=thing.png", *IMAGE]
    cases = [
        (detect + ["-o", "f/out.json"], "f is not a folder"),  # a path under a regular file
        (detect + ["-o", "f/out.jsonl"], "f is not a folder"),
        (detect + ["-o", "adir"], "adir is a folder; give a file name"),
        (detect + ["-o", "pipe.jpg"], "not a regular file"),  # writing would block on the pipe
        (detect + ["-o", "/proc/out.json"], "cannot create files in /proc"),  # no process can, root included
        (detect + ["-o", "/proc/new/out.jsonl"], "cannot create files in /proc"),
        (detect + ["-o", LONG + ".json"], "File name too long"),
        (detect + ["-o", f"new/{LONG}/out.json"], "file name too long (300 bytes"),
        (detect + ["-o", "o.json", "--draw", "f"], "--draw f exists and is not a folder"),
        (detect + ["-o", "o.json", "--draw", "f/pics"], "f is not a folder"),
        (detect + ["-o", "o.json", "--draw", "/proc/pics"], "cannot create files in /proc"),
        (detect + ["-o", "o.json", "--save-gallery", "f/g.pt"], "f is not a folder"),
        (detect + ["-o", "o.json", "--save-gallery", "adir"], "--save-gallery adir is a folder"),
        (["eval", "--boxes", "b.csv", "--classes", "c.csv", "--output-dir", "f"], "--output-dir f exists and is not"),
        (["eval", "--boxes", "b.csv", "--classes", "c.csv", "--out", "/proc/ev"], "cannot create files in /proc"),
        (["weights", "import", "w.pt", "--dir", "f"], "--output-dir f exists and is not a folder"),  # the deprecated spelling
        (["weights", "import", "w.pt", "--output-dir", "/proc/w"], "cannot create files in /proc"),
        (["weights", "compact", "w.pt", "-o", "f/small.pt"], "f is not a folder"),
        (["weights", "compact", "w.pt", "-o", "adir", "--force"], "adir is a folder"),
        (["weights", "compact", "w.pt", "-o", "/proc/small.pt"], "cannot create files in /proc"),
    ]
    before = tree(work)
    results = run_batch(work, [{"argv": argv} for argv, _ in cases])
    for (argv, fragment), res in zip(cases, results, strict=True):
        assert_one_line_error(res, fragment)
        assert "wrote" not in res["err"] and not res["out"], argv  # refused before the images were processed
    assert tree(work) == before


def _bound_by_permissions() -> list[str] | None:
    """A command prefix under which permission bits hold: none for a normal user; for root, ``setpriv`` without
    the capabilities that override them (root stays root otherwise); None when that is not possible."""
    if not hasattr(os, "geteuid"):
        return None
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    ok = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
    return prefix if ok else None


def test_read_only_folder_is_refused_before_any_work(work: Path, tmp_path: Path) -> None:
    prefix = _bound_by_permissions()
    if prefix is None:
        pytest.skip("cannot drop root's permission override here")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.jsonl").write_text("")
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        argv = ["detect", str(work / "imgs"), "--class", f"thing={work / 'thing.png'}", *IMAGE]
        results = run_batch(tmp_path, [{"argv": argv + ["-o", "locked/out.json"]},
                                       {"argv": argv + ["-o", "locked/out.jsonl"]},
                                       {"argv": argv + ["-o", "o.json", "--draw", "locked"]},
                                       {"argv": argv + ["-o", "o.json", "--save-gallery", "locked/sub/g.pt"]}],
                            prefix=prefix)
        for res in results:
            assert_one_line_error(res, "cannot create files in", "(Permission denied)")
        assert sorted(p.name for p in locked.iterdir()) == ["old.jsonl"] and not (tmp_path / "o.json").exists()
    finally:
        locked.chmod(stat.S_IRWXU)


# ------------------------------------------------------------------------------------- 3: malformed files

def test_malformed_checkpoint_and_galleries_give_one_line(work: Path) -> None:
    detect = ["detect", "scene.jpg", "-o", "m.json", *IMAGE]
    cases = [
        (detect + ["--class", "thing=thing.png", "--weights", "nomodel.pt"], "malformed os2d checkpoint"),
        (detect + ["--gallery", "g_nokernels.pt"], "malformed os2d gallery: missing kernels"),
        (detect + ["--gallery", "g_badlabel.pt"], "class index is outside the 1 classes"),
        (detect + ["--gallery", "g_unsafe.pt"], "unsafe pickled objects (posix.system)"),
        (detect + ["--gallery", "f"], "not a readable os2d gallery file"),
    ]
    results = run_batch(work, [{"argv": argv} for argv, _ in cases])
    for (_, fragment), res in zip(cases, results, strict=True):
        assert_one_line_error(res, fragment)
    assert not (work / "m.json").exists()


# ------------------------------------------------------------------------------ 5, 6: long names, named pipes

def test_long_names_and_named_pipes_fail_per_image_or_are_refused_never_hang(work: Path) -> None:
    detect = ["detect", "--class", "thing=thing.png", *IMAGE]
    cases = [
        {"argv": [*detect, LONG + ".jpg", "pipe.jpg", "scene.jpg", "-o", "per_image.json"]},
        {"argv": [*detect, "--images", "fifo_imgs", "-o", "fifo_folder.json"]},
        {"argv": ["detect", "scene.jpg", "--class", "thing=pipe.jpg", *IMAGE, "-o", "c1.json"]},
        {"argv": ["detect", "scene.jpg", "--class", f"thing={LONG}.png", *IMAGE, "-o", "c2.json"]},
    ]
    long_args = [["--classes", LONG + ".csv"], ["--gallery", LONG + ".pt"], ["--images-from", LONG + ".txt"],
                 ["--class", "thing=thing.png", "--weights", LONG + ".pt"]]
    cases += [{"argv": ["detect", "scene.jpg", *args, *IMAGE, "-o", "c3.json"]} for args in long_args]
    per_image, folder, fifo_class, long_class, *long_files = run_batch(work, cases, timeout=180)  # a hang fails

    # per-image failures: exit 1, one error line per bad image, the good image processed
    assert per_image["rc"] == 1 and "Traceback" not in per_image["err"], per_image["err"]
    errors = per_image["err"].strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("os2d: error: cannot read image ") for e in errors)
    assert errors[0].endswith("File name too long") and errors[1].endswith("not a regular file (a named pipe, "
                                                                           "socket or device)")
    records = json.loads((work / "per_image.json").read_text())["images"]
    assert ["error" in r for r in records] == [True, True, False] and records[2]["detections"]

    # a pipe inside an --images folder is skipped with a warning; the folder's image is processed
    assert folder["rc"] == 0 and "not regular files" in folder["err"] and "Traceback" not in folder["err"]
    assert [r["path"] for r in json.loads((work / "fifo_folder.json").read_text())["images"]] == \
        [os.path.join("fifo_imgs", "a.jpg")]

    assert_one_line_error(fifo_class, "class 'thing'", "not a regular file")
    assert_one_line_error(long_class, "class 'thing'", "File name too long")
    for res in long_files:  # a file name the OS refuses, in any option that reads a file
        assert_one_line_error(res, "File name too long")
    assert not any((work / f"c{i}.json").exists() for i in (1, 2, 3))


def test_named_pipe_input_alone_through_python_m_os2d(work: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "os2d", "detect", "pipe.jpg", "--class", "thing=thing.png",
                           *IMAGE, "-o", "alone.json"], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "os2d: error: cannot read image pipe.jpg: not a regular file (a named pipe, " \
                                  "socket or device)"


def test_bad_option_alone_through_python_m_os2d(work: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "os2d", "detect", "scene.jpg", "--class", "thing=thing.png",
                           "--scales", "inf", "-o", "alone.json"], cwd=work, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "os2d: error: pyramid scales must be positive finite numbers, got (inf,)"]


# ------------------------------------------------------ 8, 9, 10: JSONL resume by content, path spelling, --draw

def test_jsonl_resume_is_by_content_and_resolved_path(work: Path) -> None:
    from os2d.weights import load_model, model_fingerprint

    run = work / "resume"
    run.mkdir()
    (run / "pic.png").write_bytes((work / "thing.png").read_bytes())
    (run / "w.pt").write_bytes((work / "w.pt").read_bytes())
    base = ["detect", "--class", "thing=pic.png", *IMAGE, "-o", "r.jsonl"]
    watch = {"watch": ["r.jsonl"]}
    perturb = ("import torch; p = 'w.pt'; c = torch.load(p, weights_only=True); k = next(iter(c['model'])); "
               "c['model'][k] = c['model'][k] + 0.01; torch.save(c, p)")
    cases = [
        {"argv": [*base, "imgs_link", "--draw", "pics", "--save-gallery", "saved.pt"], **watch},  # first run
        {"argv": [*base, str(run / "imgs_link")], **watch},  # the same folder spelled absolutely
        {"argv": [*base, "imgs_link", "--weights", "w.pt"], **watch},  # another name, the same weights
        {"python": "import shutil; shutil.copy('other.png', 'pic.png')"},  # another picture, same name and path
        {"argv": [*base, "imgs_link"], **watch},
        {"python": "import shutil; shutil.copy('thing.png', 'pic.png')"},
        {"python": perturb},  # the file behind --weights w.pt changes
        {"argv": [*base, "imgs_link", "--weights", "w.pt"], **watch},
        {"argv": [*base, "imgs_link", "--weights", "w.pt", "--no-resume"], **watch},  # starting afresh is allowed
    ]
    (run / "imgs_link").symlink_to(work / "imgs")
    for name in ("thing.png", "other.png"):
        (run / name).write_bytes((work / name).read_bytes())
    first, spelled, renamed, _, other_pic, _, _, changed, fresh = run_batch(run, cases)
    assert first["rc"] == 0 and first["err"] == "", first["err"]
    h1 = first["digests"]["r.jsonl"]

    assert spelled["rc"] == 0 and spelled["digests"]["r.jsonl"] == h1  # nothing run twice, nothing appended
    assert renamed["rc"] == 0 and renamed["digests"]["r.jsonl"] == h1  # compared by content, not by name
    assert_one_line_error(other_pic, "different run: class images (content) differ", "--no-resume")
    assert other_pic["digests"]["r.jsonl"] == h1  # the existing results untouched
    assert_one_line_error(changed, "different run: model weights (content) differ", "--no-resume")
    assert changed["digests"]["r.jsonl"] == h1
    assert fresh["rc"] == 0 and fresh["digests"]["r.jsonl"] != h1
    lines = (run / "r.jsonl").read_text().splitlines()
    assert len(lines) == 3  # header + two images: the folder's images once each
    header = json.loads(lines[0])
    assert header["weights"] == "w.pt" and len(header["class_images"]) == 16
    assert header["model"] == model_fingerprint(load_model(run / "w.pt")) != model_fingerprint(load_model("default"))

    # 10: same-named images of two folders get two pictures (the folder structure is mirrored)
    assert sorted(p.relative_to(run / "pics").as_posix() for p in (run / "pics").rglob("*.png")) == \
        ["d1/x_os2d.png", "d2/x_os2d.png"]
    # output files get the usual mode (0666 & ~umask), not the 0600 of a temporary file
    mask = os.umask(0)
    os.umask(mask)
    for name in ("r.jsonl", "saved.pt"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name


def test_picture_names_are_unique_and_short() -> None:
    from os2d.apps.cli.detect import picture_paths

    out = Path("pics")
    names = picture_paths(["a/x.jpg", "b/x.jpg", "a/x.png", f"a/{LONG}.jpg"], out)
    assert names["a/x.jpg"] == out / "a" / "x.jpg_os2d.png" and names["a/x.png"] == out / "a" / "x.png_os2d.png"
    assert names["b/x.jpg"] == out / "b" / "x_os2d.png"
    assert len(set(names.values())) == 4 and len(names[f"a/{LONG}.jpg"].name) <= 255
    assert picture_paths(["one/x.jpg", "one/y.jpg"], out) == {"one/x.jpg": out / "x_os2d.png",
                                                              "one/y.jpg": out / "y_os2d.png"}
