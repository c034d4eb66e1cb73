"""Probe: TransformNet at stride 2 with bilinear upsampling, against the exact heads (issue 15).

Not in the library: the error it adds is ~70x int8's and the best location moves in half of the image-class
pairs (README, "Speed"). This script keeps the measurement reproducible.

TransformNet (7x7 -> 5x5 -> 5x5 convolutions, stride 1) is ~70% of the heads. Evaluating it at every other
location in each direction would cut that by 4, but the layers are dense: the parameters at even locations need
the first two layers at *every* location, so a stride-2 TransformNet is necessarily an approximation. Variants,
each compared with the exact heads (scores after resampling and pooling) on the same captured head inputs:

- ``int8``: the int8 TransformNet (``heads_precision="int8"``), for scale;
- ``exact-even``: the exact parameters kept at even locations only, bilinearly upsampled (the best any
  stride-2 scheme that interpolates the parameters can do);
- ``up-conv1``: the first layer at stride 2, its output upsampled, the other two layers dense (4x less of the
  first layer's cost);
- ``half-kernels``: the first layer at stride 2, the 5x5 layers as 3x3 kernels on the stride-2 grid (taps at
  half-cell offsets split bilinearly), parameters upsampled;
- ``half-same``: the same with the 5x5 kernels unchanged on the stride-2 grid (receptive field doubled).

Printed per variant: mean, 99.9th percentile and maximum |score - exact score| over all locations, and the share
of image-class pairs whose best location is unchanged.

    python benchmarks/transform_stride.py --sets demo fl27-train --max-images 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.evaluation.detector_method import DetectorMethod
from os2d.evaluation.harness import run_method
from os2d.model.correlation import l2_normalize
from os2d.model.head import os2d_head
from os2d.model.int8_transform import Int8TransformNet, _fold_bn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import CapturedHeads, load_set  # noqa: E402

VARIANTS = ("int8", "exact-even", "up-conv1", "half-kernels", "half-same")


def upsample_even(v: Tensor, h: int, w: int) -> Tensor:
    """(N, C, h2, w2) values at full-resolution locations 2*o -> (N, C, h, w), bilinear (edge held)."""

    def axis(n_full: int, n_half: int) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.arange(n_full)
        i0 = (x // 2).clamp(max=n_half - 1)
        i1 = (i0 + 1).clamp(max=n_half - 1)
        frac = torch.where(i1 == i0, 0.0, (x % 2) * 0.5)
        return i0, i1, frac

    i0, i1, fy = axis(h, v.shape[2])
    j0, j1, fx = axis(w, v.shape[3])
    rows = v[:, :, i0] * (1 - fy).view(1, 1, -1, 1) + v[:, :, i1] * fy.view(1, 1, -1, 1)
    return rows[..., j0] * (1 - fx) + rows[..., j1] * fx


def half_kernel(weight: Tensor) -> Tensor:
    """(O, C, 5, 5) kernel at stride 1 -> (O, C, 3, 3) kernel on the stride-2 grid (half-cell taps split)."""
    m = torch.tensor([[1, 0.5, 0, 0, 0], [0, 0.5, 1, 0.5, 0], [0, 0, 0, 0.5, 1]], dtype=weight.dtype)  # (3, 5)
    return torch.einsum("ai,bj,ocij->ocab", m, m, weight)


def variants(net) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each variant: (N, 225, H, W) correlation -> (N, P, H, W) parameters."""
    c1, b1, _, c2, b2, _ = net.conv
    w1, bb1 = _fold_bn(c1, b1)
    w2, bb2 = _fold_bn(c2, b2)
    wl, bl = net.linear.weight.detach(), net.linear.bias.detach()
    q8 = Int8TransformNet(net)

    def norm(corr: Tensor) -> Tensor:
        return l2_normalize(corr.relu(), 1, 1e-6)

    def exact_even(corr: Tensor) -> Tensor:
        x = norm(corr)
        p = F.conv2d(F.conv2d(F.conv2d(x, w1, bb1, padding=3).relu(), w2, bb2, padding=2).relu(), wl, bl, padding=2)
        return upsample_even(p[:, :, ::2, ::2], *x.shape[-2:])

    def first_strided(corr: Tensor) -> Tensor:
        return F.conv2d(norm(corr), w1, bb1, padding=3, stride=2).relu()

    def up_conv1(corr: Tensor) -> Tensor:
        y = upsample_even(first_strided(corr), *corr.shape[-2:])
        return F.conv2d(F.conv2d(y, w2, bb2, padding=2).relu(), wl, bl, padding=2)

    def half_kernels(corr: Tensor) -> Tensor:
        y = F.conv2d(first_strided(corr), half_kernel(w2), bb2, padding=1).relu()
        return upsample_even(F.conv2d(y, half_kernel(wl), bl, padding=1), *corr.shape[-2:])

    def half_same(corr: Tensor) -> Tensor:
        y = F.conv2d(first_strided(corr), w2, bb2, padding=2).relu()
        return upsample_even(F.conv2d(y, wl, bl, padding=2), *corr.shape[-2:])

    return {"int8": q8, "exact-even": exact_even, "up-conv1": up_conv1, "half-kernels": half_kernels,
            "half-same": half_same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["demo", "fl27-train"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--max-images", type=int, default=16)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    calls = []
    for name in args.sets:  # a new detector per set (its gallery holds that set's classes)
        det = Detector.from_weights(args.weights, config=InferenceConfig(verify_rescore=0.0))  # the heads alone
        model = det.model.eval()
        cap = CapturedHeads(model)
        run_method(DetectorMethod(det), load_set(name, args.synth_dir), config=det.config, progress=False,
                   max_images=args.max_images)
        calls += cap.calls
    cfg = model.config
    fns = variants(model.transform_net)
    stats: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        for features, kernels, aspect in calls:
            kw = dict(invert_transform=cfg.invert_transform, grid_size=cfg.class_grid_size,
                      pool_border=cfg.pool_border, aspect=aspect, aspect_power=cfg.anchor_aspect_power)
            exact = os2d_head(features, kernels, model.transform_net, **kw).scores  # (B, K, H, W)
            for v in VARIANTS:
                out = os2d_head(features, kernels, fns[v], **kw).scores
                d = (out - exact).abs().flatten()
                same = (out.flatten(2).argmax(-1) == exact.flatten(2).argmax(-1)).float().mean()
                stats[v].append((d.mean().item(), torch.quantile(d[::7], 0.999).item(), d.max().item(),
                                 same.item()))
    print(f"{len(calls)} heads calls (image x level), sets {' '.join(args.sets)}, first {args.max_images} "
          "images each, image_size auto")
    print(f"{'variant':<14}{'mean |ds|':>11}{'p99.9 |ds|':>12}{'max |ds|':>10}{'best loc same':>15}")
    for v, r in stats.items():
        print(f"{v:<14}{statistics.mean(x[0] for x in r):>11.2e}{statistics.mean(x[1] for x in r):>12.2e}"
              f"{max(x[2] for x in r):>10.3f}{100 * statistics.mean(x[3] for x in r):>14.0f}%")


if __name__ == "__main__":
    main()
