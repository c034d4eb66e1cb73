"""TransformNet pretraining: warp geometry, grid loss, the head-equivalent alignment path, pairs, the run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_toy_model
from helpers import textured_object
from PIL import Image

from os2d.model.correlation import correlate, l2_normalize
from os2d.model.grids import grid_corners, params_to_affine
from os2d.pretrain import (
    PairSet,
    PretrainConfig,
    WarpConfig,
    evaluate_alignment,
    grid_loss,
    grid_points,
    make_pairs,
    pretrain_transform,
)
from os2d.pretrain.alignment import (
    pair_correlation,
    predicted_thetas,
    receptive_radius,
    transform_params_valid,
)
from os2d.pretrain.warps import (
    apply,
    background_canvas,
    local_thetas,
    object_corners,
    render_canvas,
    sample_crop,
    sample_warp,
)
from os2d.train.transform_file import load_transform_net, save_transform_net
from os2d.weights import WeightsError

# Toy backbone (stride 16, no anchor padding): a 256 px canvas gives a 16 x 16 map, centre (8, 8), enough for
# the TransformNet's radius 7 plus a supervised radius of 0.
TOY = PretrainConfig(canvas_size=256, supervise_radius=0, num_pairs=6, eval_pairs=4, warps_per_crop=2,
                     shard_size=4, epochs=2, batch_size=3, checkpoint_every=2)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine it is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def photos(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / "photos" / f"p{i}.png"
        p.parent.mkdir(exist_ok=True)
        textured_object((200 + 20 * i, 180), seed=i).save(p)
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------------------- grid loss


def test_grid_points_equal_affine_grid():
    theta = torch.tensor([[[0.9, 0.2, 0.1], [-0.1, 1.1, -0.3]]])
    expected = F.affine_grid(theta, [1, 1, 15, 15], align_corners=True)[0].reshape(-1, 2)  # row-major (p, q)
    torch.testing.assert_close(grid_points(theta, 15)[0], expected)


def test_grid_loss_known_values():
    ident = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert grid_loss(ident[None], ident[None]).item() == 0.0
    shifted = ident.clone()
    shifted[:, 2] = torch.tensor([0.3, -0.4])
    assert grid_loss(shifted[None], ident[None]).item() == pytest.approx(0.25)  # |t|^2
    scaled = ident * torch.tensor([[2.0], [2.0]])  # x -> 2x: mean |x|^2 over the grid
    lin = torch.linspace(-1, 1, 15)
    assert grid_loss(scaled[None], ident[None]).item() == pytest.approx(2 * float(lin.pow(2).mean()), rel=1e-5)


# ------------------------------------------------------------------------------- head-equivalent path


def test_pair_correlation_is_the_diagonal_of_correlate():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(3, 8, 5, 6, generator=g)
    kernels = l2_normalize(torch.rand(3, 225, 8, generator=g), dim=-1)
    full = correlate(feats, kernels)
    pc = pair_correlation(feats, kernels)
    for b in range(3):
        torch.testing.assert_close(pc[b], full[b, b])


def test_valid_transform_net_equals_full_forward_inside():
    net = make_toy_model().transform_net
    torch.manual_seed(1)
    torch.nn.init.normal_(net.linear.weight, std=0.01)  # a non-constant output
    corr = torch.rand(2, 225, 17, 18)
    r = receptive_radius(net)
    assert r == 7
    full = net(corr)[..., r:-r, r:-r]
    torch.testing.assert_close(transform_params_valid(net, corr), full, rtol=1e-5, atol=1e-6)
    theta = predicted_thetas(net, corr, invert=True)
    torch.testing.assert_close(theta, params_to_affine(full, invert=True), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ geometry


def test_true_thetas_reproduce_the_object_corners_through_the_head_frame():
    rng = np.random.default_rng(0)
    class_size = (200, 288)
    a = sample_warp(rng, class_size, (190.0, 170.0), WarpConfig())
    h = w = 23
    ks, ls = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centres = np.stack([(ls + 0.5) * 16, (ks + 0.5) * 16], -1).reshape(-1, 2)
    theta = torch.from_numpy(local_thetas(a, class_size, centres, 240.0)).double().view(1, h, w, 2, 3)
    corners = grid_corners(theta, box_size=240.0, stride=16.0)[0]  # (H, W, 4, 2) as the head computes them
    expected = torch.from_numpy(object_corners(a, class_size))
    torch.testing.assert_close(corners, expected.expand(h, w, 4, 2), rtol=0, atol=1e-3)  # float32 thetas


def test_centred_unwarped_square_is_the_identity_at_the_centre_location():
    cfg = WarpConfig(scale_range=(1.0, 1.0), max_aspect=1.0, max_rotation_deg=0.0, max_shear=0.0)
    a = sample_warp(np.random.default_rng(0), (240, 240), (184.0, 184.0), cfg)
    theta = local_thetas(a, (240, 240), np.array([[184.0, 184.0], [200.0, 184.0]]), 240.0)
    np.testing.assert_allclose(theta[0], [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(theta[1], [[1, 0, -16 / 120], [0, 1, 0]], atol=1e-6)  # one cell to the right


def test_render_puts_the_class_image_where_the_warp_says():
    photo = textured_object((260, 220), seed=3)
    rng = np.random.default_rng(1)
    crop = sample_crop(rng, photo.size, WarpConfig())
    cls = photo.crop(crop).resize((180, 200), Image.Resampling.BILINEAR)
    a = sample_warp(rng, cls.size, (128.0, 128.0), WarpConfig())
    bg = background_canvas(textured_object((100, 100), seed=9), rng, 256)
    canvas = render_canvas(photo, crop, cls.size, a, bg, 256)
    assert canvas.shape == (3, 256, 256) and 0 <= canvas.min() and canvas.max() <= 1
    ys, xs = np.meshgrid(np.arange(20, 180) + 0.5, np.arange(20, 160) + 0.5, indexing="ij")  # inner class pixels
    pts = apply(a, np.stack([xs, ys], -1))
    grid = torch.from_numpy(np.stack([pts[..., 0] / 128 - 1, pts[..., 1] / 128 - 1], -1)).float()[None]
    seen = F.grid_sample(canvas[None], grid, align_corners=False)[0]
    want = torch.from_numpy(np.asarray(cls, dtype=np.float32) / 255).permute(2, 0, 1)[:, 20:180, 20:160]
    err = (seen - want).abs().mean().item()
    assert err < 0.06, err
    assert err < 0.3 * (seen - want.roll(37, dims=2)).abs().mean().item()


# ------------------------------------------------------------------------------------------ pairs + run


def test_make_pairs_shapes_and_determinism(photos):
    model = make_toy_model()
    cfg = PretrainConfig(canvas_size=288, supervise_radius=1, warps_per_crop=2)
    a = make_pairs(model, photos, cfg, num_pairs=3, seed=5, shard=0, full_maps=False)
    b = make_pairs(model, photos, cfg, num_pairs=3, seed=5, shard=0, full_maps=False)
    c = make_pairs(model, photos, cfg, num_pairs=3, seed=5, shard=1, full_maps=True)
    m = 1 + receptive_radius(model.transform_net)
    assert a.features.shape == (3, 32, 2 * m + 1, 2 * m + 1) and a.features.dtype == torch.float16
    assert a.kernels.shape == (3, 225, 32) and a.thetas.shape == (3, 3, 3, 2, 3) and a.corners.shape == (3, 4, 2)
    assert a.centre == (m, m) and a.radius == 1
    assert torch.equal(a.kernels[0], a.kernels[1])  # two warps of one crop share the class image
    for x, y in [(a.features, b.features), (a.thetas, b.thetas), (a.kernels, b.kernels)]:
        assert torch.equal(x, y)
    assert c.features.shape == (3, 32, 18, 18) and c.features.dtype == torch.float32 and c.centre == (9, 9)
    assert not torch.allclose(c.thetas, a.thetas)


def test_evaluation_of_the_identity_on_centred_unwarped_pairs_is_exact():
    model = make_toy_model()
    feats = torch.rand(2, 32, 17, 17)
    kernels = l2_normalize(torch.rand(2, 225, 32), dim=-1)
    c = (8 + 0.5) * 16
    corners = torch.tensor([[c - 120, c - 120], [c + 120, c - 120], [c - 120, c + 120], [c + 120, c + 120]])
    pairs = PairSet(feats, kernels, torch.zeros(2, 1, 1, 2, 3), corners.expand(2, 4, 2).clone(), (8, 8), 0)
    s = evaluate_alignment(model, pairs).summary()
    assert s["grid_err_px_mean"] == pytest.approx(0.0, abs=1e-4)
    assert s["box_iou_mean"] == pytest.approx(1.0)
    shifted = PairSet(feats, kernels, pairs.thetas, pairs.corners + torch.tensor([16.0, 0.0]), (8, 8), 0)
    assert evaluate_alignment(model, shifted).summary()["grid_err_px_mean"] == pytest.approx(16.0, abs=1e-4)


def test_training_reduces_the_grid_loss(photos):
    from os2d.pretrain.trainer import batch_loss

    model = make_toy_model()
    pairs = make_pairs(model, photos, TOY, num_pairs=4, seed=0, shard=0, full_maps=False)
    net = model.transform_net.train()
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    index = torch.arange(4)
    with torch.no_grad():
        before = batch_loss(model, pairs, index).item()
    for _ in range(20):
        loss = batch_loss(model, pairs, index)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = batch_loss(model, pairs, index).item()
    assert after < 0.25 * before, (before, after)


def test_run_writes_outputs_and_resumes(photos, tmp_path):
    out = tmp_path / "run"
    model = make_toy_model()
    summary = pretrain_transform(model, photos[:3], photos[2:], TOY, out, progress=False)
    for name in ("transform_net.pt", "model.pt", "eval.json", "checkpoint.pt"):
        assert (out / name).is_file()
    assert summary["steps"] == TOY.epochs * math.ceil(TOY.num_pairs / TOY.batch_size)
    assert set(summary["identity"]) == set(summary["pretrained"]) and "grid err px" in summary["table"]
    assert len(list((out / "cache").glob("train-*.pt"))) == 2
    # a second call finds the finished checkpoint and the cached pairs: nothing is retrained
    again = make_toy_model()
    summary2 = pretrain_transform(again, photos[:3], photos[2:], TOY, out, progress=False)
    assert summary2["pretrained"] == summary["pretrained"]
    for k, v in model.transform_net.state_dict().items():
        torch.testing.assert_close(again.transform_net.state_dict()[k], v)
    # another config in the same folder is refused
    with pytest.raises(ValueError, match="another"):
        pretrain_transform(make_toy_model(), photos[:3], photos[2:], PretrainConfig(**{**TOY.__dict__, "lr": 1e-2}),
                           out, progress=False)


def test_transform_file_round_trip_and_checks(tmp_path):
    src = make_toy_model()
    torch.nn.init.normal_(src.transform_net.linear.weight, std=0.1)
    path = tmp_path / "tn.pt"
    save_transform_net(path, src, {"note": "test"})
    dst = make_toy_model()
    assert load_transform_net(path, dst) == {"note": "test"}
    for k, v in src.transform_net.state_dict().items():
        assert torch.equal(dst.transform_net.state_dict()[k], v)
    with pytest.raises(WeightsError, match="params, invert, grid"):
        load_transform_net(path, make_toy_model(num_params=4, invert=False))
    other = make_toy_model()
    other.config = other.config.__class__(backbone="efficientnet_lite0")
    with pytest.raises(WeightsError, match="trained on toy"):
        load_transform_net(path, other)
    load_transform_net(path, other, allow_other_backbone=True)
    torch.save({"kind": "something"}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="not an os2d TransformNet"):
        load_transform_net(tmp_path / "bad.pt", dst)


def test_cli_defaults_mirror_the_config_and_parser_registers():
    from os2d.apps.cli.main import build_parser
    from os2d.apps.cli.pretrain import PRETRAIN_DEFAULTS

    cfg = PretrainConfig()
    for key in ("num_pairs", "eval_pairs", "warps_per_crop", "epochs", "batch_size", "lr", "canvas_size"):
        assert PRETRAIN_DEFAULTS[key] == getattr(cfg, key), key
    assert (PRETRAIN_DEFAULTS["min_scale"], PRETRAIN_DEFAULTS["max_scale"]) == cfg.warp.scale_range
    assert PRETRAIN_DEFAULTS["max_rotation"] == cfg.warp.max_rotation_deg
    args = build_parser().parse_args(["pretrain-transform", "--images", "x", "--out", "y"])
    assert args.num_pairs == cfg.num_pairs


def test_cli_errors_are_clear(tmp_path):
    from os2d.apps.cli.main import main

    assert main(["pretrain-transform", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["pretrain-transform", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_lr_schedule_warms_up_then_cosine():
    from os2d.pretrain.trainer import lr_at

    cfg = PretrainConfig(lr=1e-3, min_lr_ratio=0.1)
    # warm-up over min(50, total // 10) = 50 updates: lr * (step + 1) / 50, then the cosine starts at lr
    assert lr_at(0, 1000, cfg) == pytest.approx(1e-3 / 50)
    assert lr_at(24, 1000, cfg) == pytest.approx(0.5e-3)
    assert lr_at(49, 1000, cfg) == pytest.approx(1e-3)
    assert lr_at(50, 1000, cfg) == pytest.approx(1e-3)
    assert lr_at(525, 1000, cfg) == pytest.approx(0.55e-3)  # half way through the cosine
    assert lr_at(999, 1000, cfg) == pytest.approx(0.1e-3, rel=1e-4)
    assert lr_at(0, 9, cfg) == pytest.approx(1e-3)  # fewer than 10 updates: no warm-up


def test_config_validation():
    with pytest.raises(ValueError):
        WarpConfig(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError):
        PretrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="too small"):
        from os2d.pretrain.pairs import canvas_layout

        canvas_layout(make_toy_model(), PretrainConfig(canvas_size=128))
    assert PretrainConfig.from_dict(PretrainConfig().to_dict()) == PretrainConfig()
