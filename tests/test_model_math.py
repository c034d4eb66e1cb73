"""Known-value tests of the OS2D maths: correlation order, resampling, grids, head outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from os2d.model.box_coder import decode, encode, make_anchors
from os2d.model.correlation import (
    class_kernels,
    correlate,
    l2_normalize,
    resize_class_features,
    resize_class_grids,
)
from os2d.model.grids import grid_corners, params_to_affine, unit_grid_in_channel_layout
from os2d.model.head import os2d_head
from os2d.model.resample import (
    pool_mask,
    sample_per_channel,
    sample_per_channel_gather,
    sample_per_channel_loop,
)
from os2d.model.transform_net import TransformNet


def test_correlation_matches_naive_loop_with_column_major_channels():
    g = torch.Generator().manual_seed(1)
    feats = torch.rand(2, 8, 4, 5, generator=g)
    cls = l2_normalize(torch.rand(3, 8, 15, 15, generator=g))
    corr = correlate(feats, class_kernels(cls))  # (B, K, 225, H, W)
    fn = l2_normalize(feats)
    for b in range(2):
        for k in range(3):
            for p, q in [(0, 0), (3, 7), (14, 2), (9, 14)]:
                expected = torch.einsum("c,chw->hw", cls[k, :, p, q], fn[b])
                torch.testing.assert_close(corr[b, k, q * 15 + p], expected, rtol=1e-5, atol=1e-6)


def test_class_feature_resize_equals_identity_grid_sample():
    fm = torch.rand(1, 6, 11, 17)
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    grid = F.affine_grid(theta, [1, 6, 15, 15], align_corners=True)
    ref = F.grid_sample(fm, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    torch.testing.assert_close(resize_class_features(fm), l2_normalize(ref)[0], rtol=1e-5, atol=1e-6)


def test_batched_class_grids_equal_one_at_a_time():
    """The second look resizes a batch of crop features at once: the same values, to the bit, as one by one
    (channels-last too, as the backbone returns them)."""
    fms = torch.rand(5, 8, 9, 13)
    for x in (fms, fms.contiguous(memory_format=torch.channels_last)):
        batch = resize_class_grids(x, 15)
        assert batch.shape == (5, 8, 15, 15)
        assert torch.equal(batch, torch.stack([resize_class_features(f, 15) for f in x]))


def test_resampling_matches_per_channel_grid_sample():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(3, 10, 7, 9, generator=g)
    # points partly outside the map: the reference clamps them to the border
    x = torch.rand(3, 10, 7, 9, generator=g) * 14 - 3
    y = torch.rand(3, 10, 7, 9, generator=g) * 12 - 3
    loop = sample_per_channel_loop(maps, x, y)
    torch.testing.assert_close(sample_per_channel(maps, x, y), loop, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sample_per_channel_gather(maps, x, y), loop, rtol=1e-5, atol=1e-6)


def test_resampling_gradcheck():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(1, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    # keep points away from integer coordinates (bilinear is not differentiable there)
    x = (torch.rand(1, 4, 3, 2, generator=g, dtype=torch.float64) * 4.6 + 0.2).requires_grad_()
    y = (torch.rand(1, 4, 3, 2, generator=g, dtype=torch.float64) * 3.6 + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(sample_per_channel, (maps, x, y))
    assert torch.autograd.gradcheck(sample_per_channel_gather, (maps, x, y))


def test_affine_inverse_and_v1_layout():
    g = torch.Generator().manual_seed(4)
    params = torch.randn(2, 6, 3, 4, generator=g) * 0.2
    params[:, 0] += 1
    params[:, 4] += 1
    direct = params_to_affine(params, invert=False)
    inv = params_to_affine(params, invert=True)
    full = torch.cat([direct, torch.tensor([0.0, 0, 1]).expand(*direct.shape[:-2], 1, 3)], dim=-2)
    full_inv = torch.cat([inv, torch.tensor([0.0, 0, 1]).expand(*inv.shape[:-2], 1, 3)], dim=-2)
    eye = torch.eye(3).expand_as(full)
    torch.testing.assert_close(full @ full_inv, eye, rtol=1e-4, atol=1e-5)
    v1 = params_to_affine(torch.tensor([2.0, 0.5, 3.0, -0.25]).view(1, 4, 1, 1), invert=False)[0, 0, 0]
    torch.testing.assert_close(v1, torch.tensor([[2.0, 0.0, 0.5], [0.0, 3.0, -0.25]]))


def _random_theta(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    eye = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    return eye + 0.2 * torch.randn(n, h, w, 2, 3, generator=g)  # (N, H, W, 2, 3)


def test_unit_grid_in_channel_layout_equals_affine_grid():
    n, h, w, s = 2, 4, 5, 15
    theta = _random_theta(n, h, w)
    grid = unit_grid_in_channel_layout(theta, s, h, w)  # (N, S*S, H, W, 2)
    assert grid.shape == (n, s * s, h, w, 2)
    for i, k, j in [(0, 0, 0), (1, 3, 4), (0, 2, 1)]:
        local = F.affine_grid(theta[i, k, j][None], [1, 1, s, s], align_corners=True)[0]  # (S, S, 2) [p, q]
        x_fm = local[..., 0] * s / 2 + j + 0.5
        y_fm = local[..., 1] * s / 2 + k + 0.5
        expected = torch.stack([x_fm * 2 / (w - 1) - 1, y_fm * 2 / (h - 1) - 1], -1)  # (S, S, 2)
        got = grid[i, :, k, j].view(s, s, 2).transpose(0, 1)  # channel q*S + p -> [p, q]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_grid_corners_are_affine_grid_corners_in_pixels():
    h, w = 3, 4
    theta = _random_theta(1, h, w, seed=1)
    corners = grid_corners(theta, box_size=240.0, stride=16.0)  # (1, H, W, 4, 2)
    for k, j in [(0, 0), (2, 3), (1, 2)]:
        local = F.affine_grid(theta[0, k, j][None], [1, 1, 2, 2], align_corners=True)[0]  # (2, 2, 2) TL TR BL BR
        expected = local.reshape(4, 2) * 120 + torch.tensor([16 * (j + 0.5), 16 * (k + 0.5)])
        torch.testing.assert_close(corners[0, k, j], expected, rtol=1e-5, atol=1e-4)


def test_box_coder_round_trip():
    anchors = make_anchors(3, 4)
    assert anchors.shape == (12, 4)
    torch.testing.assert_close(anchors[5], torch.tensor([24.0 - 120, 24 - 120, 24 + 120, 24 + 120]))
    boxes = anchors + torch.tensor([3.0, -5, 40, 7])
    torch.testing.assert_close(decode(encode(boxes, anchors), anchors), boxes, rtol=1e-5, atol=1e-3)


def _naive_identity_scores(feats, cls):
    """Sliding window: each location's score is the mean over the inner 11x11 class cells of the cosine
    between the class cell and the input features bilinearly interpolated at the identity grid points
    (x = l - 7 + q * 15/14, clamped), written with plain loops."""
    fn = l2_normalize(feats)[0]  # (C, H, W)
    c, h, w = fn.shape
    out = torch.zeros(h, w)

    def interp(xf, yf):
        xf = min(max(xf, 0.0), w - 1)
        yf = min(max(yf, 0.0), h - 1)
        x0, y0 = int(xf), int(yf)
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        ax, ay = xf - x0, yf - y0
        return ((1 - ay) * ((1 - ax) * fn[:, y0, x0] + ax * fn[:, y0, x1])
                + ay * ((1 - ax) * fn[:, y1, x0] + ax * fn[:, y1, x1]))

    for k in range(h):
        for col in range(w):
            total = 0.0
            for p in range(2, 13):
                for q in range(2, 13):
                    v = interp(col + 0.5 + 7.5 * (-1 + 2 * q / 14), k + 0.5 + 7.5 * (-1 + 2 * p / 14))
                    total += float(cls[:, p, q] @ v)
            out[k, col] = total / 121
    return out


def test_identity_transform_gives_sliding_window_score_and_anchor_boxes():
    g = torch.Generator().manual_seed(5)
    feats = torch.rand(1, 6, 5, 6, generator=g)
    cls = l2_normalize(torch.rand(1, 6, 15, 15, generator=g))
    net = TransformNet(6).eval()  # identity init
    out = os2d_head(feats, class_kernels(cls), net, invert_transform=True)
    torch.testing.assert_close(out.scores[0, 0], _naive_identity_scores(feats, cls[0]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.boxes_xyxy[0, 0].reshape(-1, 4), make_anchors(5, 6), rtol=0, atol=1e-3)
    torch.testing.assert_close(out.loc_codes()[0, 0], torch.zeros(4, 30), rtol=0, atol=1e-4)


def test_window_taken_from_input_scores_one_at_its_location():
    g = torch.Generator().manual_seed(6)
    feats = torch.rand(1, 16, 20, 22, generator=g)
    k0, l0 = 9, 11
    # class grid = input features sampled at the identity grid of location (k0, l0)
    lin = torch.linspace(-1, 1, 15)
    xs = (l0 + 0.5 + 7.5 * lin).view(1, 15).expand(15, 15)
    ys = (k0 + 0.5 + 7.5 * lin).view(15, 1).expand(15, 15)
    fn = l2_normalize(feats)
    cls = sample_per_channel(fn[:, :, None].expand(1, 16, 1, 20, 22).reshape(1, 16, 20, 22),
                             xs.expand(1, 16, 15, 15), ys.expand(1, 16, 15, 15))
    # score at (k0, l0) = mean over inner cells of cos(v/|v|, v) = |v| (interpolated unit vectors are shorter)
    expected = cls.norm(dim=1)[0, 2:13, 2:13].mean()
    cls = l2_normalize(cls)
    with torch.no_grad():
        out = os2d_head(feats, class_kernels(cls), TransformNet(6).eval(), invert_transform=True)
    scores = out.scores[0, 0]
    torch.testing.assert_close(scores[k0, l0], expected, rtol=1e-4, atol=1e-4)
    assert int(scores.argmax()) == k0 * 22 + l0


def test_v1_scale_parameter_scales_the_box():
    feats = torch.rand(1, 4, 3, 3)
    cls = l2_normalize(torch.rand(1, 4, 15, 15))
    net = TransformNet(4).eval()
    net.linear.bias.data = torch.tensor([2.0, 0.0, 0.5, 0.0])  # sx=2, tx=0, sy=0.5, ty=0
    out = os2d_head(feats, class_kernels(cls), net, invert_transform=False)
    box = out.boxes_xyxy[0, 0, 1, 1]  # centre (24, 24)
    torch.testing.assert_close(box, torch.tensor([24.0 - 240, 24 - 60, 24 + 240, 24 + 60]))


def test_batched_classes_equal_one_by_one():
    g = torch.Generator().manual_seed(7)
    feats = torch.rand(2, 8, 6, 7, generator=g)
    kern = class_kernels(l2_normalize(torch.rand(5, 8, 15, 15, generator=g)))
    net = TransformNet(6).eval()
    torch.nn.init.normal_(net.linear.weight, std=0.01)  # a non-identity transform
    full = os2d_head(feats, kern, net, invert_transform=True)
    for chunk in (1, 2):
        part = os2d_head(feats, kern, net, invert_transform=True, class_chunk=chunk)
        torch.testing.assert_close(part.scores, full.scores)
        torch.testing.assert_close(part.boxes_xyxy, full.boxes_xyxy)
        torch.testing.assert_close(part.corners_xy, full.corners_xy)
    single = os2d_head(feats[1:], kern[3:4], net, invert_transform=True)
    torch.testing.assert_close(single.scores[0, 0], full.scores[1, 3], rtol=1e-5, atol=1e-6)


def test_empty_class_set():
    out = os2d_head(torch.rand(1, 8, 4, 4), torch.zeros(0, 225, 8), TransformNet(6).eval(), invert_transform=True)
    assert out.scores.shape == (1, 0, 4, 4) and out.boxes_xyxy.shape == (1, 0, 4, 4, 4)


def test_pool_mask_is_mean_of_inner_cells():
    m = pool_mask(15, 2).view(15, 15)
    assert torch.isclose(m.sum(), torch.tensor(1.0))
    assert (m[2:13, 2:13] > 0).all() and m[:2].eq(0).all() and m[:, 13:].eq(0).all()
