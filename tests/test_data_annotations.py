"""Dataset readers: reference OS2D CSV, simple pixel CSV, COCO JSON; validation; subset/stats/scales."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from os2d.data import (
    AnnotationError,
    DetectionDataset,
    ImageRecord,
    read_coco,
    read_reference_csv,
    read_simple_csv,
    suggest_image_size,
)

SHARED_FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickrlogos27-dev"


def noise_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------------------ reference CSV

REF_HEADER = ["", "imageid", "imagefilename", "classid", "classfilename", "gtbboxid", "difficult",
              "lx", "ty", "rx", "by", "split"]


@pytest.fixture
def ref_dirs(tmp_path: Path) -> tuple[Path, Path]:
    images, classes = tmp_path / "src", tmp_path / "classes"
    noise_image(images / "a.jpg", 200, 100, 1)
    noise_image(images / "b.png", 50, 40, 2)
    noise_image(classes / "c0.jpg", 32, 32, 3)
    noise_image(classes / "c1.jpg", 24, 40, 4)
    noise_image(classes / "other.jpg", 24, 40, 5)
    return images, classes


def test_reference_csv_reads_relative_boxes_in_pixels(tmp_path, ref_dirs):
    images, classes = ref_dirs
    csv_path = write_csv(tmp_path / "ds.csv", REF_HEADER, [
        [0, "a", "a.jpg", "0", "c0.jpg", 0, 0, 0.1, 0.2, 0.5, 0.6, "train"],
        [1, "a", "a.jpg", "1", "c1.jpg", 1, 1, 0.0, 0.0, 1.0, 1.0, "train"],
        [2, "b", "b.png", "1", "other.jpg", 2, 0, 0.5, 0.5, 1.0, 1.0, "val"],  # first classfilename wins
    ])
    ds = read_reference_csv(csv_path, images, classes)
    assert [im.image_id for im in ds.images] == ["a", "b"]
    a, b = ds.images
    assert (a.width, a.height) == (200, 100) and a.boxes_xyxy.dtype == np.float32
    np.testing.assert_allclose(a.boxes_xyxy, [[20, 20, 100, 60], [0, 0, 200, 100]], atol=1e-4)
    assert a.labels.tolist() == [0, 1] and a.difficult.tolist() == [False, True]
    np.testing.assert_allclose(b.boxes_xyxy, [[25, 20, 50, 40]])
    assert ds.class_ids == ["0", "1"]
    assert ds.classes[1].image_paths == [classes / "c1.jpg"]
    assert ds.num_boxes == 3

    train = read_reference_csv(csv_path, images, classes, split="train")
    assert [im.image_id for im in train.images] == ["a"] and train.num_boxes == 2


def test_reference_csv_default_file_names(tmp_path):
    images, classes = tmp_path / "src", tmp_path / "classes"
    noise_image(images / "img7.jpg", 100, 100)
    noise_image(classes / "42.jpg", 20, 20)
    csv_path = write_csv(tmp_path / "ds.csv", ["imageid", "classid", "gtbboxid", "difficult",
                                               "lx", "ty", "rx", "by"],
                         [["img7", "42", 0, 0, 0.25, 0.25, 0.75, 0.75]])
    ds = read_reference_csv(csv_path, images, classes)
    assert ds.images[0].path == images / "img7.jpg"
    assert ds.classes[0].image_paths == [classes / "42.jpg"]
    np.testing.assert_allclose(ds.images[0].boxes_xyxy, [[25, 25, 75, 75]])


def test_reference_csv_collects_errors_with_file_and_row(tmp_path, ref_dirs):
    images, classes = ref_dirs
    noise_image(classes / "flat.jpg", 1, 1)  # too small
    Image.new("RGB", (30, 30), (128, 128, 128)).save(classes / "uniform.jpg")
    csv_path = write_csv(tmp_path / "bad.csv", REF_HEADER, [
        [0, "a", "a.jpg", "0", "c0.jpg", 0, 0, 0.1, 0.2, 0.5, 0.6, "train"],     # line 2 ok
        [1, "a", "a.jpg", "0", "c0.jpg", 1, 0, "abc", 0.2, 0.5, 0.6, "train"],   # line 3 bad number
        [2, "x", "missing.jpg", "0", "c0.jpg", 2, 0, 0.1, 0.1, 0.2, 0.2, "train"],  # line 4 missing image
        [3, "a", "a.jpg", "0", "c0.jpg", 3, 0, 0.5, 0.2, 0.4, 0.6, "train"],     # line 5 x2 <= x1
        [4, "a", "a.jpg", "0", "c0.jpg", 4, 0, 0.1, 0.2, 1.2, 0.6, "train"],     # line 6 outside (40 px)
        [5, "b", "b.png", "5", "nothere.jpg", 5, 0, 0.1, 0.1, 0.2, 0.2, "val"],  # line 7 missing class img
        [6, "b", "b.png", "6", "uniform.jpg", 6, 0, 0.1, 0.1, 0.2, 0.2, "val"],  # line 8 uniform
        [7, "b", "b.png", "7", "flat.jpg", 7, 2, 0.1, 0.1, 0.2, 0.2, "val"],     # line 9 bad flag + tiny
    ])
    with pytest.raises(AnnotationError) as info:
        read_reference_csv(csv_path, images, classes)
    msg = str(info.value)
    errs = info.value.errors
    assert f"{csv_path}:3:lx: not a number" in msg
    assert f"{csv_path}:4: image file not found" in msg
    assert f"{csv_path}:5: empty box" in msg
    assert f"{csv_path}:6: box" in msg and "outside the image of size 200x100" in msg
    assert any(e.startswith(f"{csv_path}:7: class '5'") and "not found" in e for e in errs)
    assert any(e.startswith(f"{csv_path}:8: class '6'") and "uniform" in e for e in errs)
    assert f"{csv_path}:9:difficult" in msg
    assert any(e.startswith(f"{csv_path}:9: class '7'") and "too small" in e for e in errs)
    assert msg.startswith(f"8 problems in {csv_path}")


def test_reference_csv_slack_and_clip(tmp_path, ref_dirs):
    images, classes = ref_dirs
    # 0.004 * 200 = 0.8 px outside: within slack, clipped silently
    rows = [[0, "a", "a.jpg", "0", "c0.jpg", 0, 0, -0.004, 0.0, 0.5, 1.0, "t"]]
    ds = read_reference_csv(write_csv(tmp_path / "s.csv", REF_HEADER, rows), images, classes)
    np.testing.assert_allclose(ds.images[0].boxes_xyxy, [[0, 0, 100, 100]])
    rows = [[0, "a", "a.jpg", "0", "c0.jpg", 0, 0, 0.5, 0.5, 1.5, 1.5, "t"]]
    path = write_csv(tmp_path / "c.csv", REF_HEADER, rows)
    with pytest.raises(AnnotationError, match=r"c\.csv:2: box .* outside"):
        read_reference_csv(path, images, classes)
    ds = read_reference_csv(path, images, classes, clip=True)
    np.testing.assert_allclose(ds.images[0].boxes_xyxy, [[100, 50, 200, 100]])


def test_reference_csv_missing_columns(tmp_path, ref_dirs):
    images, classes = ref_dirs
    path = write_csv(tmp_path / "m.csv", ["imageid", "classid", "lx"], [["a", "0", 0.1]])
    with pytest.raises(AnnotationError, match=r"m\.csv:1: missing column\(s\) ty, rx, by"):
        read_reference_csv(path, images, classes)
    with pytest.raises(AnnotationError, match="split"):
        read_reference_csv(write_csv(tmp_path / "n.csv", REF_HEADER[1:-1], []), images, classes, split="val")


def test_error_list_is_capped(tmp_path, ref_dirs):
    images, classes = ref_dirs
    rows = [[i, "a", "a.jpg", "0", "c0.jpg", i, 0, "bad", 0.1, 0.5, 0.5, "t"] for i in range(30)]
    with pytest.raises(AnnotationError) as info:
        read_reference_csv(write_csv(tmp_path / "many.csv", REF_HEADER, rows), images, classes)
    assert len(info.value.errors) == 20
    assert "30 problems" in str(info.value) and "first 20 shown" in str(info.value)


# --------------------------------------------------------------------------------------- simple CSV


def make_simple(tmp_path: Path) -> tuple[Path, Path]:
    noise_image(tmp_path / "imgs" / "one.jpg", 300, 200, 1)
    noise_image(tmp_path / "imgs" / "two.jpg", 100, 100, 2)
    noise_image(tmp_path / "cls" / "cat_a.jpg", 30, 30, 3)
    noise_image(tmp_path / "cls" / "cat_b.jpg", 30, 30, 4)
    noise_image(tmp_path / "cls" / "dog.png", 30, 30, 5)
    class_csv = write_csv(tmp_path / "classes.csv", ["name", "path"],
                          [["cat", "cls/cat_a.jpg"], ["dog", "cls/dog.png"], ["cat", "cls/cat_b.jpg"]])
    boxes_csv = write_csv(tmp_path / "boxes.csv", ["image", "class", "x1", "y1", "x2", "y2", "difficult"], [
        ["imgs/one.jpg", "dog", 10, 20, 110, 120, 0],
        ["imgs/one.jpg", "cat", 0, 0, 300, 200, 1],
        ["imgs/two.jpg", "cat", 5.5, 5, 50, 60, ""],
    ])
    return boxes_csv, class_csv


def test_simple_csv_valid(tmp_path):
    boxes_csv, class_csv = make_simple(tmp_path)
    ds = read_simple_csv(boxes_csv, class_csv)
    assert ds.name == "boxes"
    assert ds.class_names == ["cat", "dog"]
    assert ds.classes[0].image_paths == [tmp_path / "cls/cat_a.jpg", tmp_path / "cls/cat_b.jpg"]
    one, two = ds.images
    assert one.image_id == "imgs/one.jpg" and one.path == tmp_path / "imgs/one.jpg"
    assert (one.width, one.height) == (300, 200)
    np.testing.assert_allclose(one.boxes_xyxy, [[10, 20, 110, 120], [0, 0, 300, 200]])
    assert one.labels.tolist() == [1, 0] and one.difficult.tolist() == [False, True]
    np.testing.assert_allclose(two.boxes_xyxy, [[5.5, 5, 50, 60]])
    assert two.difficult.tolist() == [False]


def test_simple_csv_image_root(tmp_path):
    boxes_csv, class_csv = make_simple(tmp_path)
    moved = tmp_path / "ann"
    moved.mkdir()
    new_boxes = moved / "boxes.csv"
    new_boxes.write_text(boxes_csv.read_text())
    with pytest.raises(AnnotationError, match="image file not found"):
        read_simple_csv(new_boxes, class_csv)
    assert read_simple_csv(new_boxes, class_csv, image_root=tmp_path).num_boxes == 3


def test_simple_csv_errors(tmp_path):
    _, class_csv = make_simple(tmp_path)
    boxes_csv = write_csv(tmp_path / "bad.csv", ["image", "class", "x1", "y1", "x2", "y2"], [
        ["imgs/one.jpg", "bird", 10, 20, 110, 120],   # 2 unknown class
        ["imgs/one.jpg", "cat", 10, "?", 110, 120],   # 3 bad y1
        ["imgs/nope.jpg", "cat", 1, 1, 5, 5],         # 4 missing image
        ["imgs/two.jpg", "dog", 10, 10, 10, 50],      # 5 x2 <= x1
        ["imgs/two.jpg", "dog", 10, 10, 50, 102],     # 6 outside (2 px > 1 px slack)
        ["imgs/two.jpg", "dog", 10, 10, 50, 101],     # 7 ok (slack)
    ])
    with pytest.raises(AnnotationError) as info:
        read_simple_csv(boxes_csv, class_csv)
    msg = str(info.value)
    assert f"{boxes_csv}:2: unknown class 'bird'" in msg
    assert f"{boxes_csv}:3:y1: not a number: '?'" in msg
    assert f"{boxes_csv}:4: image file not found" in msg
    assert f"{boxes_csv}:5: empty box" in msg
    assert f"{boxes_csv}:6: box" in msg and "100x100" in msg
    assert ":7:" not in msg
    assert len(info.value.errors) == 5


def test_simple_csv_bad_class_image(tmp_path):
    boxes_csv, _ = make_simple(tmp_path)
    Image.new("RGB", (40, 40), "white").save(tmp_path / "cls" / "blank.jpg")
    class_csv = write_csv(tmp_path / "c2.csv", ["name", "path"],
                          [["cat", "cls/cat_a.jpg"], ["dog", "cls/blank.jpg"], ["cat", "cls/gone.jpg"]])
    with pytest.raises(AnnotationError) as info:
        read_simple_csv(boxes_csv, class_csv)
    errs = info.value.errors
    assert any(e.startswith(f"{class_csv}:3: class 'dog'") and "uniform" in e for e in errs)
    assert any(e.startswith(f"{class_csv}:2: class 'cat'") and "gone.jpg" in e for e in errs)
    ds = read_simple_csv(boxes_csv, class_csv, check_class_images=False)
    assert ds.num_boxes == 3


# --------------------------------------------------------------------------------------------- COCO


def make_coco(tmp_path: Path, annotations: list[dict], categories=None) -> Path:
    noise_image(tmp_path / "images" / "p.jpg", 120, 80, 1)
    noise_image(tmp_path / "images" / "q.jpg", 64, 64, 2)
    noise_image(tmp_path / "classes" / "apple.png", 30, 30, 3)
    noise_image(tmp_path / "classes" / "pear.jpeg", 30, 30, 4)
    data = {
        "images": [{"id": 1, "file_name": "p.jpg", "width": 120, "height": 80},
                   {"id": 2, "file_name": "q.jpg"}],
        "annotations": annotations,
        "categories": categories or [{"id": 7, "name": "apple"}, {"id": 3, "name": "pear"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_valid(tmp_path):
    path = make_coco(tmp_path, [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [0, 0, 120, 80], "iscrowd": 1},
        {"id": 12, "image_id": 2, "category_id": 7, "bbox": [1, 2, 3, 4]},
    ])
    ds = read_coco(path, tmp_path / "images", tmp_path / "classes")
    assert ds.class_ids == ["7", "3"] and ds.class_names == ["apple", "pear"]
    assert ds.classes[0].image_paths == [tmp_path / "classes" / "apple.png"]
    p, q = ds.images
    np.testing.assert_allclose(p.boxes_xyxy, [[10, 20, 40, 60], [0, 0, 120, 80]])
    assert p.labels.tolist() == [1, 0] and p.difficult.tolist() == [False, True]
    assert (q.width, q.height) == (64, 64)  # read from the file header
    np.testing.assert_allclose(q.boxes_xyxy, [[1, 2, 4, 6]])


def test_coco_errors(tmp_path):
    path = make_coco(tmp_path, [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40]},
        {"id": 11, "image_id": 9, "category_id": 3, "bbox": [10, 20, 30, 40]},
        {"id": 12, "image_id": 1, "category_id": 99, "bbox": [10, 20, 30, 40]},
        {"id": 13, "image_id": 1, "category_id": 3, "bbox": [10, 20, 0, 40]},
        {"id": 14, "image_id": 1, "category_id": 3, "bbox": [100, 20, 30, 40]},
        {"id": 15, "image_id": 1, "category_id": 3, "bbox": [10, "x", 30, 40]},
    ], categories=[{"id": 7, "name": "apple"}, {"id": 3, "name": "pear"}, {"id": 4, "name": "plum"},
                   {"id": 5, "name": "kiwi"}])
    with pytest.raises(AnnotationError) as info:
        read_coco(path, tmp_path / "images", tmp_path / "classes")
    msg = str(info.value)
    assert "for 2 categories: plum, kiwi" in msg
    assert f"{path}:annotations[1] (id=11): unknown image_id 9" in msg
    assert f"{path}:annotations[2] (id=12): unknown category_id 99" in msg
    assert f"{path}:annotations[3] (id=13): empty box" in msg
    assert f"{path}:annotations[4] (id=14): box" in msg and "120x80" in msg
    assert f"{path}:annotations[5] (id=15):bbox[1]: not a number" in msg
    assert "annotations[0]" not in msg


def test_coco_duplicate_image_id_and_bad_json_size(tmp_path):
    path = make_coco(tmp_path, [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40]}])
    data = json.loads(path.read_text())
    data["images"].append({"id": 1, "file_name": "q.jpg"})
    data["images"][1]["width"], data["images"][1]["height"] = "wide", 64
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as info:
        read_coco(path, tmp_path / "images", tmp_path / "classes")
    assert info.value.errors == [f"{path}:images[1]:width: not a number: 'wide'",
                                 f"{path}:images[2]: duplicate image id 1"]


# ------------------------------------------------------------------------------ subset/stats/scales


def toy_dataset() -> DetectionDataset:
    from os2d.data import ClassRecord

    images = [
        ImageRecord("i0", Path("i0.jpg"), 1000, 1000, [[0, 0, 120, 120], [10, 10, 130, 130]], [0, 1],
                    [False, False]),
        ImageRecord("i1", Path("i1.jpg"), 1000, 1000, [[0, 0, 120, 120], [0, 0, 500, 500]], [1, 2],
                    [False, True]),
        ImageRecord("i2", Path("i2.jpg"), 1000, 1000, [[5, 5, 125, 125]], [2], [False]),
    ]
    classes = [ClassRecord("a", "A", ["a.jpg"]), ClassRecord("b", "B", ["b1.jpg", "b2.jpg"]),
               ClassRecord("c", "C", ["c.jpg"])]
    return DetectionDataset("toy", images, classes)


def test_subset_keeps_images_and_reindexes_labels():
    ds = toy_dataset()
    sub = ds.subset(class_ids=["c", "b"])
    assert [im.image_id for im in sub.images] == ["i0", "i1", "i2"]  # all images kept
    assert sub.class_ids == ["b", "c"]
    assert sub.images[0].labels.tolist() == [0]
    assert sub.images[1].labels.tolist() == [0, 1] and sub.images[1].difficult.tolist() == [False, True]
    assert sub.images[2].labels.tolist() == [1]
    only_a = ds.subset(class_ids=["a"])
    assert [im.num_boxes for im in only_a.images] == [1, 0, 0]
    assert only_a.images[1].boxes_xyxy.shape == (0, 4)
    by_image = ds.subset(image_ids=["i2", "i0"])
    assert [im.image_id for im in by_image.images] == ["i0", "i2"] and by_image.class_ids == ["a", "b", "c"]
    assert ds.num_boxes == 5  # original untouched
    with pytest.raises(KeyError):
        ds.subset(class_ids=["zzz"])


def test_stats_and_suggest_image_size():
    ds = toy_dataset()
    st = ds.stats()
    assert st == {"name": "toy", "images": 3, "boxes": 5, "non_difficult_boxes": 4, "classes": 3,
                  "median_object_size": 120.0}
    # all non-difficult objects are 120 px in 1000x1000 images -> 1000 * 240 / 120
    assert suggest_image_size(ds) == 2000
    assert suggest_image_size(ds, target_object_size=60) == 500
    with pytest.raises(ValueError):
        suggest_image_size(DetectionDataset("empty", [], []))


def test_suggest_image_size_reads_sizes_lazily(tmp_path):
    path = noise_image(tmp_path / "r.jpg", 400, 100)  # sqrt(W*H) = 200
    ds = DetectionDataset("lazy", [ImageRecord("r", path, None, None, [[0, 0, 50, 50]], [0], [False])], [])
    assert suggest_image_size(ds) == 960
    assert (ds.images[0].width, ds.images[0].height) == (400, 100)


# ------------------------------------------------------------------------------- real data (smoke)


@pytest.mark.skipif(not (SHARED_FLICKR / "annotations.csv").is_file(), reason="flickrlogos27-dev not present")
def test_flickrlogos27_dev_smoke():
    ds = read_simple_csv(SHARED_FLICKR / "annotations.csv", SHARED_FLICKR / "class_images.csv", clip=True)
    st = ds.stats()
    assert st["images"] > 0 and st["boxes"] >= st["images"] and st["classes"] == len(ds.classes) > 0
    assert all(len(c.image_paths) >= 1 for c in ds.classes)
    for im in ds.images:
        assert im.boxes_xyxy.shape == (im.num_boxes, 4)
        assert (im.boxes_xyxy[:, 2] <= im.width).all() and (im.boxes_xyxy[:, 3] <= im.height).all()
        assert (im.labels < len(ds.classes)).all()
    assert suggest_image_size(ds) > 0
