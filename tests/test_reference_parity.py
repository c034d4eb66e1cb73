"""Known answer from the reference implementation (aosokin/os2d): an official-format V2 checkpoint and its
exact outputs on given inputs (../shared/data/reference-parity). This is the proof of faithfulness."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from os2d.config import InferenceConfig
from os2d.inference.detect import detect_image
from os2d.io import image_to_tensor
from os2d.weights import load_model

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def parity(request):
    from conftest import SHARED_DATA

    root = SHARED_DATA / "reference-parity" / "v2"
    if not root.is_dir():
        pytest.skip("../shared/data/reference-parity is absent")
    model = load_model(root / "checkpoint.pth")
    image = Image.open(root / "input.png").convert("RGB")
    classes = [image_to_tensor(Image.open(root / f"class_{i}.png").convert("RGB")) for i in range(2)]
    ref = torch.load(root / "reference.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        kernels = model.class_kernels(classes)
        out = model(image_to_tensor(image)[None], kernels)
    return model, image, kernels, out, ref


def test_variant_inferred_from_file(parity):
    model = parity[0]
    assert model.config.backbone == "resnet50" and model.config.variant == "v2"


def test_scores_loc_corners_match_reference(parity):
    _, _, _, out, ref = parity
    h, w = ref["fm_size"]
    assert out.scores.shape[-2:] == (h, w)
    torch.testing.assert_close(out.scores[0].reshape(2, -1), ref["scores"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loc_codes()[0], ref["loc"], rtol=0, atol=1e-4)
    corners = out.corners_xy[0].reshape(2, h * w, 8).transpose(1, 2)
    torch.testing.assert_close(corners, ref["corners"], rtol=0, atol=1e-3)  # pixels up to ~1000: f32 round-off


def test_detections_match_reference(parity):
    model, image, kernels, _, ref = parity
    cfg = InferenceConfig(image_size=None, scales=(1.0,), nms_iou_threshold=0.3, score_threshold=None,
                          max_detections=None, pre_nms_top_k=None, heads_precision="fp32")
    dets = detect_image(model, image, kernels, torch.tensor([0, 1]), ["c0", "c1"], cfg)
    assert len(dets) == len(ref["det_scores"])
    order = torch.argsort(ref["det_scores"], descending=True, stable=True)
    torch.testing.assert_close(dets.scores, ref["det_scores"][order], rtol=0, atol=1e-5)
    torch.testing.assert_close(dets.labels, ref["labels"][order])
    torch.testing.assert_close(dets.boxes_xyxy, ref["boxes_xyxy"][order], rtol=0, atol=1e-2)
