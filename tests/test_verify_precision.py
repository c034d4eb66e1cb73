"""The second look's crop precision (``InferenceConfig.verify_precision``): ``"bf16-exact"`` looks at every detection in
bfloat16 and again in float32 wherever a detection can be among the ``EXACT_TOP`` best; and the crops' batches."""

from __future__ import annotations

import pytest
import torch
from helpers import ring_object, scene_with, textured_object

import os2d.inference.verify as verify
from os2d.apps.service.app import ServiceSettings
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.inference.verify import EXACT_TOP, box_corners, crop_cells, verify_detections
from os2d.io import image_to_tensor
from os2d.results import Detections


@pytest.fixture(scope="module")
def toy_model_module():
    from conftest import make_toy_model

    return make_toy_model()


@pytest.fixture(scope="module")
def detector(toy_model_module) -> Detector:
    det = Detector(toy_model_module, InferenceConfig(image_size=None, max_detections=None))
    det.add_class("obj", textured_object(seed=3))
    return det


def sixty_looks(detector: Detector) -> tuple[Detections, torch.Tensor]:
    """60 raw detections of the class's size on a scene with the object and a ring, and the scene (3, H, W)."""
    scene = scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240))
    scene.paste(ring_object(), (200, 60))
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=gen) * torch.tensor([220.0, 110.0])
    boxes = torch.cat([xy, xy + torch.tensor([96.0, 128.0])], dim=1)
    raw = Detections(boxes, torch.rand(60, generator=gen) - 0.2, torch.zeros(60, dtype=torch.long),
                     box_corners(boxes), ["obj"], (320, 240))
    return raw, image_to_tensor(scene)


@pytest.fixture
def rounded_bf16(monkeypatch):
    """bfloat16 looks made visibly approximate on any CPU: the crops' cells of a ``"bf16"`` look get a fixed 3%
    perturbation (hardware without bf16 dot products would otherwise run float32), and ``bf16_applies`` says yes.
    Yields the number of crops looked at per precision."""
    looked = {"fp32": 0, "bf16": 0}
    real = verify.crop_cells

    def cells(model, image, corners, labels, *args, precision="fp32", **kw):
        looked[precision] += len(corners)
        out = real(model, image, corners, labels, *args, precision=precision, **kw)
        if precision == "bf16":
            gen = torch.Generator().manual_seed(len(corners))
            out = torch.nn.functional.normalize(out * (1 + 0.03 * torch.randn(out.shape, generator=gen)), dim=-1)
        return out

    monkeypatch.setattr(verify, "crop_cells", cells)
    monkeypatch.setattr(verify, "bf16_applies", lambda device: True)
    return looked


def test_bf16_exact_gives_the_float32_top_and_looks_at_fewer_crops_in_float32(detector, rounded_bf16):
    raw, image = sixty_looks(detector)
    g = detector.gallery

    def run(precision: str, **kw) -> Detections:
        for k in rounded_bf16:
            rounded_bf16[k] = 0
        return verify_detections(detector.model, raw, image, g.kernels, g.view_class, g.view_aspect, 2.0,
                                 precision=precision, **kw)

    exact = run("fp32")
    assert rounded_bf16 == {"fp32": 60, "bf16": 0}
    approx = run("bf16")
    assert rounded_bf16 == {"fp32": 0, "bf16": 60}
    assert not torch.allclose(approx.scores, exact.scores)  # the perturbation moves scores
    mixed = run("bf16-exact")
    assert rounded_bf16["bf16"] == 60 - verify.CROP_CHUNK  # every detection beyond the first chunk in bf16 ...
    assert verify.CROP_CHUNK <= rounded_bf16["fp32"] < 60  # ... and only some of them again in fp32
    torch.testing.assert_close(mixed.scores[:EXACT_TOP], exact.scores[:EXACT_TOP], atol=1e-6, rtol=0)
    assert mixed.boxes_xyxy[:EXACT_TOP].tolist() == exact.boxes_xyxy[:EXACT_TOP].tolist()
    assert not torch.allclose(mixed.scores, exact.scores)  # the rest keeps bf16 values
    capped = run("bf16-exact", max_detections=3)  # a cap inside the exact top: the float32 result's first 3
    torch.testing.assert_close(capped.scores, exact.scores[:3], atol=1e-6, rtol=0)


def test_bf16_exact_is_float32_where_bf16_does_not_apply(detector, rounded_bf16, monkeypatch):
    raw, image = sixty_looks(detector)
    g = detector.gallery
    monkeypatch.setattr(verify, "bf16_applies", lambda device: False)
    exact = verify_detections(detector.model, raw, image, g.kernels, g.view_class, g.view_aspect, 2.0)
    mixed = verify_detections(detector.model, raw, image, g.kernels, g.view_class, g.view_aspect, 2.0,
                              precision="bf16-exact")
    assert rounded_bf16 == {"fp32": 120, "bf16": 0}  # one float32 look per detection, in each run
    assert mixed.scores.tolist() == exact.scores.tolist()


def test_verify_precision_settings():
    assert InferenceConfig(verify_precision="bf16-exact").verify_precision == "bf16-exact"
    with pytest.raises(ValueError, match="verify_precision"):
        InferenceConfig(verify_precision="int8")
    assert ServiceSettings(verify_precision="bf16-exact").verify_precision == "bf16-exact"
    with pytest.raises(ValueError, match="verify_precision"):
        ServiceSettings(verify_precision="fp16")


def test_crops_of_one_shape_go_in_near_equal_batches(detector, monkeypatch):
    """17 crops of one shape run as 9 + 8, not 16 + 1 (a one-crop call costs about as much as four crops in a batch)."""
    raw, image = sixty_looks(detector)
    g = detector.gallery
    calls = []
    extract = type(detector.model).extract_features

    def counted(self, x, **kw):
        calls.append(x.shape[0])
        return extract(self, x, **kw)

    monkeypatch.setattr(type(detector.model), "extract_features", counted)
    crop_cells(detector.model, image, raw.corners_xy[:17], raw.labels[:17], g.view_class, g.view_aspect)
    assert calls == [9, 8]
    calls.clear()
    crop_cells(detector.model, image, raw.corners_xy[:16], raw.labels[:16], g.view_class, g.view_aspect)
    assert calls == [16]
