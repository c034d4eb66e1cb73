"""Detection over folders: discovery, background decoding == simple path, JSONL lines, partial last line, resume,
bad images, shards whose union equals a single-process run (by hand and under torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import make_toy_model
from helpers import scene_with, textured_object

from os2d.apps.cli.main import main
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.errors import Os2dError
from os2d.results import DetectionsFileError, jsonl_header, read_jsonl
from os2d.runner import (
    JsonlWriter,
    Shard,
    discover_images,
    iter_detections,
    merge_shards,
    prefetched,
    run_to_jsonl,
    shard_path,
)

# ------------------------------------------------------------------------------------------- discovery


def test_discover_folders_globs_lists_and_plain_paths(tmp_path):
    for rel in ["a.jpg", "sub/b.PNG", "sub/deep/c.webp", "d.tiff", "e.bmp", "f.tif", "g.jpeg", ".hidden/x.jpg",
                ".y.png", "notes.txt", "sub/readme.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = discover_images([tmp_path])
    rel = [str(Path(p).relative_to(tmp_path)) for p in found]
    assert rel == sorted(["a.jpg", "d.tiff", "e.bmp", "f.tif", "g.jpeg", "sub/b.PNG", "sub/deep/c.webp"])
    assert discover_images([str(tmp_path / "**" / "*.webp")]) == [str(tmp_path / "sub/deep/c.webp")]
    (tmp_path / "list.txt").write_text("# comment\n\na.jpg\nmissing.jpg\n" + str(tmp_path / "e.bmp") + "\n")
    listed = discover_images([tmp_path / "list.txt", tmp_path / "a.jpg", "other/nope.png"])
    assert listed == [str(tmp_path / "a.jpg"), str(tmp_path / "missing.jpg"), str(tmp_path / "e.bmp"),
                      "other/nope.png"]  # each path once; missing files stay (they become error records)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images .* found in folder"):
        discover_images([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no images match"):
        discover_images([str(tmp_path / "*.gif")])


# -------------------------------------------------------------------------------------------- prefetch


def test_prefetched_keeps_order_bounds_the_window_and_turns_image_errors_into_results():
    from os2d.io import ImageError

    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * ((7 * i) % 5))  # out-of-order completion
        if i == 5:
            raise ImageError(f"cannot read image {i}")
        return i * i

    out = []
    for n, p in enumerate(prefetched(range(20), work, workers=3, depth=4)):
        with lock:
            assert len(started) <= n + 1 + 4  # never more than `depth` items ahead of the consumer
        out.append(p)
    assert [p.item for p in out] == list(range(20))
    assert [p.value for p in out if p.error is None] == [i * i for i in range(20) if i != 5]
    assert out[5].error == "cannot read image 5" and out[5].value is None
    simple = list(prefetched(range(20), work, workers=0))
    assert [(p.item, p.value, p.error) for p in simple] == [(p.item, p.value, p.error) for p in out]

    def boom(i: int) -> int:
        raise RuntimeError("a bug, not a bad image")

    with pytest.raises(RuntimeError, match="a bug"):
        list(prefetched(range(3), boom, workers=2))


# ------------------------------------------------------------------------------- detection over folders


@pytest.fixture(scope="module")
def toy_detector():
    det = Detector(make_toy_model(), InferenceConfig(image_size=160, scales=(1.0, 0.75), max_detections=8))
    det.add_class("thing", textured_object((96, 112)))
    det.add_class("other", textured_object((80, 80), seed=5))
    return det


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    obj = textured_object((96, 112))
    for i in range(5):
        sub = root / ("sub" if i % 3 == 0 else "")
        sub.mkdir(exist_ok=True)
        ext = ["jpg", "png", "bmp", "webp"][i % 4]
        scene_with(obj, [(20 + 30 * i, 40)], size=(320, 240), seed=i).save(sub / f"img{i}.{ext}")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.boxes_xyxy, a.scores, a.labels, a.corners_xy),
                                                 (b.boxes_xyxy, b.scores, b.labels, b.corners_xy), strict=True))


def test_background_decoding_equals_the_simple_path_and_detect(toy_detector, folder):
    paths = discover_images([folder])
    fast = list(iter_detections(toy_detector, paths, workers=2, depth=3))
    simple = list(iter_detections(toy_detector, paths, workers=0))
    assert [r.path for r in fast] == [r.path for r in simple] == paths
    for f, s in zip(fast, simple, strict=True):
        assert (f.error is None) == (s.error is None) == (not f.path.endswith("broken.jpg"))
        if f.error is None:
            assert _same(f.detections, s.detections) and len(f.detections) > 0
            if f.path.endswith("img1.png"):
                assert _same(f.detections, toy_detector.detect(f.path))
            assert f.record() == s.record()


def _close_records(a, b, tol: float = 0.05) -> bool:
    """Same structure, strings and order; numbers equal up to ``tol`` (processes with other thread counts sum
    floats in another order, and the shipped model's TransformNet turns that into ~1e-4 px)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close_records(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close_records(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tol
    return a == b


def _records(path):
    return {r["path"]: r for r in read_jsonl(path).records}


def test_jsonl_lines_partial_last_line_and_resume(toy_detector, folder, tmp_path):
    paths = discover_images([folder])
    out = tmp_path / "res.jsonl"
    full = run_to_jsonl(toy_detector, paths, tmp_path / "full.jsonl", workers=2)
    assert (full.processed, full.skipped, full.failed) == (len(paths), 0, 1)
    lines = (tmp_path / "full.jsonl").read_text().splitlines()
    assert len(lines) == len(paths) + 1
    header = json.loads(lines[0])
    assert header["classes"] == ["thing", "other"] and header["config"]["image_size"] == 160
    bad = json.loads(next(ln for ln in lines if "broken.jpg" in ln))
    assert "error" in bad and bad["detections"] == []

    first = run_to_jsonl(toy_detector, paths[:3], out, workers=1)
    assert first.processed == 3
    with open(out, "ab") as f:  # a crash in the middle of a line
        f.write(b'{"path": "' + paths[3].encode() + b'", "width": 3')
    contents = read_jsonl(out)
    assert contents.partial_tail and len(contents.records) == 3

    calls = []
    orig = toy_detector.detect_pyramid
    toy_detector.detect_pyramid = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        again = run_to_jsonl(toy_detector, paths, out, workers=2)
    finally:
        del toy_detector.detect_pyramid
    assert (again.skipped, again.processed) == (3, len(paths) - 3)
    assert len(calls) == sum(not p.endswith("broken.jpg") for p in paths[3:])  # a bad image: no detection
    assert not read_jsonl(out).partial_tail
    assert _records(out) == _records(tmp_path / "full.jsonl")

    nothing = run_to_jsonl(toy_detector, paths, out)
    assert (nothing.processed, nothing.skipped) == (0, len(paths))
    retried = run_to_jsonl(toy_detector, paths, out, retry_errors=True)
    assert (retried.processed, retried.failed) == (1, 1)
    assert read_jsonl(out).latest() == _records(tmp_path / "full.jsonl")
    fresh = run_to_jsonl(toy_detector, paths[:2], out, resume=False)
    assert fresh.processed == 2 and len(read_jsonl(out).records) == 2


def test_resume_refuses_a_file_of_another_run(toy_detector, tmp_path):
    out = tmp_path / "r.jsonl"
    JsonlWriter(out, jsonl_header(["a", "b"], weights="default")).close()
    with pytest.raises(DetectionsFileError, match="different run.*classes"):
        run_to_jsonl(toy_detector, [], out, weights="default")
    (tmp_path / "x.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(DetectionsFileError, match="not an os2d detections JSONL"):
        read_jsonl(tmp_path / "x.jsonl")
    out.write_text(out.read_text() + "not json\n{}\n")
    with pytest.raises(DetectionsFileError, match="line 2: not valid JSON"):
        read_jsonl(out)
    assert issubclass(DetectionsFileError, Os2dError)  # the CLI prints it as one line, exit code 2


def test_shards_by_hand_union_equals_single_process(toy_detector, folder, tmp_path):
    paths = discover_images([folder])
    single = tmp_path / "single.jsonl"
    run_to_jsonl(toy_detector, paths, single)
    out = tmp_path / "sharded.jsonl"
    for rank in (1, 0):
        s = run_to_jsonl(toy_detector, paths, shard_path(out, rank), shard=Shard(rank, 2))
        assert s.total == len(paths[rank::2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.rank0.jsonl", "sharded.rank1.jsonl",
                                                          "single.jsonl"]
    summary = merge_shards([shard_path(out, 0), shard_path(out, 1)], out)  # order restored from the ranks
    assert (summary.images, summary.failed, summary.missing) == (len(paths), 1, [])
    merged, ref = read_jsonl(out), read_jsonl(single)
    assert merged.records == ref.records  # same images, same order, same detections
    assert merged.header == ref.header
    assert Shard.from_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}) == Shard(1, 3, 1)
    assert Shard.from_env({}) == Shard(0, 1, 0)
    assert Shard(1, 2).device("auto") == ("cuda:1" if torch.cuda.device_count() > 1 else
                                          "cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="bad shard"):
        Shard(2, 2)


# ------------------------------------------------------------------------------------------ command line


def _cli_common(classes_dir: Path) -> list[str]:
    return ["--class", f"thing={classes_dir / 'thing.png'}", "--image-size", "0", "--max-detections", "5", "-q"]


@pytest.fixture(scope="module")
def classes_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    textured_object((96, 112)).save(d / "thing.png")
    return d


def test_cli_jsonl_matches_json_and_rank_env_sharding_matches_single(folder, classes_dir, tmp_path, monkeypatch,
                                                                     capsys):
    common = _cli_common(classes_dir)
    assert main(["detect", "--images", str(folder), "--out", str(tmp_path / "a.json")] + common) == 1  # broken
    assert main(["detect", "--images", str(folder), "--out", str(tmp_path / "a.jsonl")] + common) == 1
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["version"] == 1 and doc["classes"] == ["thing"]
    lines = read_jsonl(tmp_path / "a.jsonl")
    assert lines.records == doc["images"] and lines.header["classes"] == ["thing"]
    capsys.readouterr()

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    out = tmp_path / "s.jsonl"
    for rank in (0, 1):  # ranks started by hand, one after the other
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["detect", "--images", str(folder), "--out", str(out), "--workers", "1"] + common[:-1]) == (
            1 if rank == 0 else 0)  # broken.jpg is rank 0's
        err = capsys.readouterr().err
        assert ("run `os2d detect --merge" in err) == (rank == 0)
    assert read_jsonl(out).records == lines.records  # the last rank merged

    out.unlink()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["detect", "--merge", "--out", str(out)]) == 0
    assert read_jsonl(out).records == lines.records
    assert main(["detect", "--merge", "--out", str(tmp_path / "none.jsonl")]) == 2
    assert "no shard files" in capsys.readouterr().err


def test_cli_shortlist_option_reaches_the_detector(folder, classes_dir, tmp_path):
    common = _cli_common(classes_dir) + ["--class", f"other={classes_dir / 'thing.png'}"]
    out = tmp_path / "k.jsonl"
    assert main(["detect", str(folder / "img1.png"), "--out", str(out), "--shortlist", "1"] + common) == 0
    contents = read_jsonl(out)
    assert contents.header["config"]["shortlist_top_k"] == 1
    assert len({d["label"] for d in contents.records[0]["detections"]}) == 1
    # a resumed run must use the same options
    assert main(["detect", str(folder / "img1.png"), "--out", str(out)] + common) == 2


@pytest.mark.slow
def test_torchrun_two_cpu_processes_equal_single_process(folder, classes_dir, tmp_path):
    """``torchrun --nproc-per-node 2``: each rank writes its shard, rank 0 merges after a barrier."""
    common = _cli_common(classes_dir)
    images = str(folder / "**" / "img*")  # the good images
    single = tmp_path / "single.jsonl"
    assert main(["detect", "--images", images, "--out", str(single)] + common) == 0
    out = tmp_path / "tr.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "os2d",
           "detect", "--images", images, "--out", str(out)] + common
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shard_path(out, 0).is_file() and shard_path(out, 1).is_file()
    assert len(read_jsonl(shard_path(out, 1)).records) == 2
    assert _close_records(read_jsonl(out).records, read_jsonl(single).records)


# -------------------------------------------------------------------------------- one output format


def _rounded(dets: list[dict]) -> bool:
    """Scores at 6 decimals, pixels at 2: the contract's rounding."""
    return all(d["score"] == round(d["score"], 6)
               and all(v == round(v, 2) for v in d["box_xyxy"] + [c for xy in d["corners_xy"] for c in xy])
               for d in dets)


def test_detect_demo_and_eval_write_the_same_record_form(classes_dir, tmp_path, monkeypatch):
    """``os2d detect``, ``os2d demo`` and ``os2d eval`` build their records with os2d.results: same keys, same
    rounding, and a detect record equals image_record() of Detector.detect()."""
    import numpy as np

    from os2d.apps.demo.run import run_demo
    from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord
    from os2d.evaluation.harness import evaluate_method
    from os2d.results import image_record

    monkeypatch.setattr(Detector, "from_weights", classmethod(
        lambda cls, weights="default", *, device="cpu", config=None: cls(make_toy_model(), config, device=device)))
    scene_path = tmp_path / "scene.png"
    scene_with(textured_object((96, 112)), [(40, 30)], size=(320, 240)).save(scene_path)

    assert main(["detect", str(scene_path), "-o", str(tmp_path / "d.json")] + _cli_common(classes_dir)) == 0
    detect_doc = json.loads((tmp_path / "d.json").read_text())
    demo = run_demo(tmp_path / "demo", image_size=320, scales=(1.0,), max_detections=5)
    demo_doc = json.loads(Path(demo["files"]["detections_json"]).read_text())
    gt = ImageRecord("scene.png", scene_path, 320, 240, np.array([[40, 30, 136, 142]]), np.array([0]), np.array([0]))
    dataset = DetectionDataset("one", [gt],
                               [ClassRecord("thing", "thing", [classes_dir / "thing.png"])])
    evaluate_method("os2d", dataset, InferenceConfig(image_size=None, max_detections=5), model=make_toy_model(),
                    progress=False, detections_path=tmp_path / "eval.jsonl")
    eval_lines = (tmp_path / "eval.jsonl").read_text().splitlines()

    assert list(detect_doc) == list(demo_doc) == ["version", "classes", "images"]
    assert detect_doc["version"] == demo_doc["version"] == 1
    assert demo_doc["classes"] == demo["classes"] and detect_doc["classes"] == ["thing"]
    eval_record = json.loads(eval_lines[0])
    assert len(eval_lines) == 1 and eval_record.pop("image_id") == "scene.png"
    records = [detect_doc["images"][0], demo_doc["images"][0], eval_record]
    for rec in records:
        assert list(rec) == ["path", "width", "height", "detections"] and len(rec["detections"]) == 5
        assert all(list(d) == ["label", "score", "box_xyxy", "corners_xy"] for d in rec["detections"])
        assert _rounded(rec["detections"])
    # the CLI and the harness ran the same detector on the same image with the same options
    assert records[0]["detections"] == records[2]["detections"]
    det = Detector(make_toy_model(), InferenceConfig(image_size=None, max_detections=5))
    det.add_class("thing", classes_dir / "thing.png")
    assert records[0] == image_record(str(scene_path), (320, 240), det.detect(scene_path))
