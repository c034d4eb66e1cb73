"""Patch sampler: crops, coverage rules, class batches, mined patches, determinism (generated images only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import textured_object
from PIL import Image

from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord
from os2d.train.sampler import MinedPatch, PatchSampler, SamplerConfig, TrainBatch, box_coverage

OBJ = 64  # object side in the generated scenes


def make_dataset(root: Path, *, num_images: int = 4, num_classes: int = 6, size: tuple[int, int] = (320, 240),
                 obj: int = OBJ, per_image: int = 3, seed: int = 0) -> DetectionDataset:
    """Scenes with textured square objects of random classes (non-overlapping grid cells) + class images."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    classes = []
    objects = []
    for c in range(num_classes):
        im = textured_object((obj, obj), seed=100 + c)
        path = root / f"class_{c}.png"
        im.save(path)
        objects.append(im)
        classes.append(ClassRecord(class_id=f"c{c}", name=f"class {c}", image_paths=[path]))
    w, h = size
    cells = [(x, y) for y in range(0, h - obj + 1, obj + 8) for x in range(0, w - obj + 1, obj + 8)]
    images = []
    for i in range(num_images):
        bg = rng.normal(128, 20, (h, w, 3)).clip(0, 255).astype(np.uint8)
        scene = Image.fromarray(bg)
        picks = rng.choice(len(cells), size=per_image, replace=False)
        labels = rng.integers(num_classes, size=per_image)
        boxes = []
        for cell, lab in zip(picks, labels, strict=True):
            x, y = cells[int(cell)]
            scene.paste(objects[int(lab)], (x, y))
            boxes.append([x, y, x + obj, y + obj])
        path = root / f"scene_{i}.png"
        scene.save(path)
        images.append(ImageRecord(image_id=f"scene_{i}", path=path, width=w, height=h,
                                  boxes_xyxy=np.array(boxes, np.float32), labels=labels,
                                  difficult=np.zeros(per_image, bool)))
    return DetectionDataset(name="generated", images=images, classes=classes)


@pytest.fixture
def dataset(tmp_path: Path) -> DetectionDataset:
    return make_dataset(tmp_path)


def small_config(**kw) -> SamplerConfig:
    base = dict(patch_size=96, batch_size=2, class_batch_size=4, class_image_size=48)
    base.update(kw)
    return SamplerConfig(**base)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="coverage"):
        SamplerConfig(drop_box_coverage=0.8, min_box_coverage=0.7)
    with pytest.raises(ValueError, match="patch_size"):
        SamplerConfig(patch_size=8)
    with pytest.raises(ValueError, match="kind"):
        MinedPatch(0, (0, 0, 1, 1), 1.0, 0, "hard", 1.0)


def test_box_coverage_known_values() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]], np.float32)
    np.testing.assert_allclose(box_coverage(boxes, (0, 0, 10, 10)), [1.0, 0.5, 0.0, 0.0])


def test_batch_shapes_boxes_inside_and_labels(dataset: DetectionDataset) -> None:
    sampler = PatchSampler(dataset, small_config(), image_size=200)
    assert sampler.num_images == 4
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = sampler.sample([0, 1], rng)
        assert batch.images.shape == (2, 3, 96, 96) and batch.images.dtype == torch.float32
        assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
        k = len(batch.class_ids)
        assert len(batch.class_images) == k == 4  # random negatives fill the class batch
        assert len(set(batch.class_ids)) == k
        for img in batch.class_images:
            assert img.shape[0] == 3 and abs(img.shape[1] * img.shape[2] - 48 * 48) < 2 * 48
        for boxes, labels, diff, idx in zip(batch.boxes, batch.labels, batch.difficult, batch.image_indices,
                                            strict=True):
            assert boxes.dtype == torch.float32 and labels.dtype == torch.int64 and diff.dtype == torch.bool
            assert boxes.shape == (len(labels), 4) == (len(diff), 4)
            assert bool((boxes >= 0).all() and (boxes <= 96).all())
            assert bool((boxes[:, 2:] >= boxes[:, :2]).all())
            assert bool(((labels >= -1) & (labels < k)).all())
            # every box label points at its dataset class (or -1 when that class has no head)
            dataset_classes = set(dataset.images[idx].labels.tolist())
            for lab in labels.tolist():
                if lab >= 0:
                    assert batch.class_ids[lab] in dataset_classes
        assert batch.image_ids == [dataset.images[i].image_id for i in batch.image_indices]


def test_random_crop_accepts_only_covering_crops(dataset: DetectionDataset) -> None:
    cfg = small_config()
    sampler = PatchSampler(dataset, cfg, image_size=200)
    rec = dataset.images[0]
    rng = np.random.default_rng(1)
    fallback = (0.0, 0.0, min(96 / sampler.base_scale(320, 240), 320.0), min(96 / sampler.base_scale(320, 240), 240))
    for _ in range(50):
        crop = sampler.random_crop(320, 240, rec.boxes_xyxy, rng)
        assert 0 <= crop[0] < crop[2] <= 320 and 0 <= crop[1] < crop[3] <= 240
        assert crop == fallback or box_coverage(rec.boxes_xyxy, crop).max() >= cfg.min_box_coverage
    # a box that no crop can cover well -> the top-left fallback after max_trials
    tiny = PatchSampler(dataset, small_config(max_trials=3), image_size=200)
    far = np.array([[319.5, 239.5, 330, 250]], np.float32)
    assert tiny.random_crop(320, 240, far, rng) == fallback
    # the scale follows image_size: crop width ~ P / s0 within the jitter
    s0 = sampler.base_scale(320, 240)
    crops = [sampler.random_crop(320, 240, np.zeros((0, 4), np.float32), rng) for _ in range(50)]
    widths = [c[2] - c[0] for c in crops]
    assert all(96 / s0 * 0.7 - 1e-6 <= w <= min(96 / s0 / 0.7, 320) + 1e-6 for w in widths)


def test_coverage_rules_and_box_mapping(tmp_path: Path) -> None:
    # one red box, cut by explicit crops: fully inside / half inside (difficult) / 20 % inside (dropped)
    w, h = 200, 100
    scene = np.zeros((h, w, 3), np.uint8)
    scene[20:60, 40:80] = (255, 0, 0)
    path = tmp_path / "red.png"
    Image.fromarray(scene).save(path)
    cls = tmp_path / "cls.png"
    textured_object((32, 32)).save(cls)
    rec = ImageRecord("red", path, w, h, boxes_xyxy=[[40, 20, 80, 60]], labels=[0], difficult=[False])
    ds = DetectionDataset("red", [rec], [ClassRecord("c0", "c0", [cls])])
    sampler = PatchSampler(ds, small_config(patch_size=100, random_interpolation=False), image_size=100)
    rng = np.random.default_rng(0)

    p = sampler.make_patch(0, (20.0, 0.0, 120.0, 100.0), rng)  # whole box inside, scale 1
    np.testing.assert_allclose(p.boxes, [[20, 20, 60, 60]])
    assert not p.difficult[0]
    arr = np.asarray(p.image)
    assert (arr[25:55, 25:55] == (255, 0, 0)).all() and arr[:, 70:].max() == 0

    p = sampler.make_patch(0, (60.0, 0.0, 160.0, 100.0), rng)  # half of the box inside -> difficult
    np.testing.assert_allclose(p.boxes, [[0, 20, 20, 60]])
    assert p.difficult[0]

    p = sampler.make_patch(0, (72.0, 0.0, 172.0, 100.0), rng)  # 20 % inside -> dropped (background)
    assert len(p.boxes) == 0 and len(p.labels) == 0

    p = sampler.make_patch(0, (30.0, 10.0, 80.0, 60.0), rng)  # scale 2: box maps to [20, 20, 100, 100]
    np.testing.assert_allclose(p.boxes, [[20, 20, 100, 100]], atol=1e-4)
    arr = np.asarray(p.image)
    assert (arr[30:90, 30:90] == (255, 0, 0)).all() and arr[:15, :15].max() == 0

    # a crop past the image (mined patches near the border) is padded with zeros
    p = sampler.make_patch(0, (150.0, 50.0, 250.0, 150.0), rng)
    arr = np.asarray(p.image)
    assert arr[60:, :].max() == 0 and arr[:, 60:].max() == 0


def test_dataset_difficult_stays_difficult(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, num_images=1, per_image=2)
    ds.images[0].difficult[:] = True
    sampler = PatchSampler(ds, small_config(patch_size=320, scale_jitter=1.0, aspect_jitter=1.0), image_size=277)
    p = sampler.make_patch(0, (0.0, 0.0, 320.0, 240.0), np.random.default_rng(0))
    assert len(p.labels) == 2 and p.difficult.all()


def present_classes(batch: TrainBatch, dataset: DetectionDataset) -> set[int]:
    """Dataset classes of the boxes kept in the patches (recovered from the crops)."""
    out = set()
    for idx, crop in zip(batch.image_indices, batch.crops_xyxy, strict=True):
        rec = dataset.images[idx]
        cov = box_coverage(rec.boxes_xyxy, crop)
        out |= {int(c) for c in rec.labels[cov >= 0.3]}
    return out


def test_class_batch_reference_mode_only_present_classes(dataset: DetectionDataset) -> None:
    sampler = PatchSampler(dataset, small_config(random_negatives=False, class_batch_size=15), image_size=200)
    rng = np.random.default_rng(3)
    for _ in range(5):
        batch = sampler.sample([0, 1, 2], rng)
        assert set(batch.class_ids) == present_classes(batch, dataset)
        assert all(bool((lab >= 0).all()) for lab in batch.labels)  # every kept box has a head


def test_class_batch_paper_mode_fills_with_negatives(dataset: DetectionDataset) -> None:
    sampler = PatchSampler(dataset, small_config(random_negatives=True, class_batch_size=5), image_size=200)
    rng = np.random.default_rng(4)
    for _ in range(5):
        batch = sampler.sample([0, 1], rng)
        present = present_classes(batch, dataset)
        assert len(batch.class_ids) == 5
        if len(present) <= 5:
            assert present <= set(batch.class_ids)


def test_truncated_class_batch_labels_minus_one(dataset: DetectionDataset) -> None:
    sampler = PatchSampler(dataset, small_config(random_negatives=False, class_batch_size=1, patch_size=64),
                           image_size=100)
    rng = np.random.default_rng(5)
    seen_minus_one = False
    for _ in range(10):
        batch = sampler.sample([0, 1, 2, 3], rng)
        assert len(batch.class_ids) == 1  # several classes are present, only one head
        for idx, crop, labels in zip(batch.image_indices, batch.crops_xyxy, batch.labels, strict=True):
            rec = dataset.images[idx]
            kept = rec.labels[box_coverage(rec.boxes_xyxy, crop) >= 0.3]
            expected = np.where(kept == batch.class_ids[0], 0, -1)
            np.testing.assert_array_equal(labels.numpy(), expected)
            seen_minus_one |= bool((labels == -1).any())
    assert seen_minus_one


def assert_same_batch(a: TrainBatch, b: TrainBatch) -> None:
    assert torch.equal(a.images, b.images)
    assert a.class_ids == b.class_ids and a.image_ids == b.image_ids and a.crops_xyxy == b.crops_xyxy
    for x, y in zip(a.boxes + a.labels + a.difficult + a.class_images, b.boxes + b.labels + b.difficult + b.class_images,
                    strict=True):
        assert torch.equal(x, y)


def test_determinism_and_cache(dataset: DetectionDataset) -> None:
    sampler = PatchSampler(dataset, small_config(horizontal_flip=True), image_size=200)
    cached = PatchSampler(dataset, small_config(horizontal_flip=True), image_size=200, cache_images=True)
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    first = sampler.sample([0, 3], rng)
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = state  # a checkpointed state replays the batch
    assert_same_batch(first, sampler.sample([0, 3], rng2))
    assert_same_batch(first, cached.sample([0, 3], np.random.default_rng(7)))
    assert_same_batch(first, cached.sample([0, 3], np.random.default_rng(7)))  # from the cache now
    other = sampler.sample([0, 3], np.random.default_rng(8))
    assert not torch.equal(first.images, other.images)


def test_horizontal_flip_mirrors_patches_boxes_and_class_images(dataset: DetectionDataset) -> None:
    plain = PatchSampler(dataset, small_config(), image_size=200)
    flip = PatchSampler(dataset, small_config(horizontal_flip=True), image_size=200)
    flipped_once = False
    for seed in range(6):
        a = plain.sample([1, 2], np.random.default_rng(seed))
        b = flip.sample([1, 2], np.random.default_rng(seed))  # same draws; the flip coin comes last
        assert a.crops_xyxy == b.crops_xyxy and a.class_ids == b.class_ids
        if torch.equal(a.images, b.images):
            continue
        flipped_once = True
        assert torch.equal(a.images.flip(-1), b.images)
        for ba, bb in zip(a.boxes, b.boxes, strict=True):
            torch.testing.assert_close(bb[:, [2, 0]], 96 - ba[:, [0, 2]])
        assert torch.equal(a.class_images[0].flip(-1), b.class_images[0])
    assert flipped_once


def test_mined_patches_replace_random_crops(dataset: DetectionDataset) -> None:
    sampler = PatchSampler(dataset, small_config(random_negatives=False, class_batch_size=15), image_size=200)
    neg = MinedPatch(2, (10.0, 20.0, 110.0, 120.0), 0.96, 5, "neg", 0.3)
    pos = MinedPatch(1, (250.0, 150.0, 350.0, 250.0), 0.96, 0, "pos", 0.2)  # sticks out: padded
    batch = sampler.sample([0, 0], np.random.default_rng(0), mined=[neg, pos])
    assert batch.image_indices == [2, 1]
    assert batch.crops_xyxy == [neg.crop_xyxy, pos.crop_xyxy]
    assert {5, 0} <= set(batch.class_ids)  # mined classes are forced into the class batch
    assert set(batch.class_ids) == present_classes(batch, dataset) | {5, 0}
    assert float(batch.images[1, :, 95, 95].abs().sum()) == 0.0  # zero padding past the image
    # a pool: half negatives, half positives
    pool = [MinedPatch(i % 4, (0.0, 0.0, 100.0, 100.0), 1.0, i % 6, "neg", 1.0) for i in range(5)]
    pool += [MinedPatch(3, (0.0, 0.0, 100.0, 100.0), 1.0, 2, "loc", 1.0)]
    picks = sampler.select_mined(pool, 4, np.random.default_rng(0))
    assert [p.kind for p in picks] == ["neg", "neg", "loc", "loc"]
    # an empty pool falls back to random crops of the given images
    batch = sampler.sample([0, 3], np.random.default_rng(0), mined=[])
    assert batch.image_indices == [0, 3]


def test_errors(dataset: DetectionDataset, tmp_path: Path) -> None:
    sampler = PatchSampler(dataset, small_config(), image_size=200)
    with pytest.raises(IndexError, match="out of range"):
        sampler.sample([0, 9], np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one"):
        sampler.sample([], np.random.default_rng(0))
    bad = DetectionDataset("bad", dataset.images, dataset.classes[:-1] + [ClassRecord("x", "x", [])])
    with pytest.raises(ValueError, match="without class images"):
        PatchSampler(bad, small_config(), image_size=200)
    with pytest.raises(ValueError, match="image_size"):
        PatchSampler(dataset, small_config(), image_size=0)
    missing = DetectionDataset("m", [ImageRecord("gone", tmp_path / "gone.png", 10, 10)], dataset.classes)
    with pytest.raises(ValueError, match="gone.png"):
        PatchSampler(missing, small_config(), image_size=200).sample([0], np.random.default_rng(0))


def test_to_device_keeps_everything(dataset: DetectionDataset) -> None:
    batch = PatchSampler(dataset, small_config(), image_size=200).sample([0, 1], np.random.default_rng(0))
    moved = batch.to("cpu")
    assert_same_batch(batch, moved)
    assert moved.image_indices == batch.image_indices
