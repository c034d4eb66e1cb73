"""EfficientNet-Lite's uneven "same" padding: a padded copy of the input vs zero taps in the kernel.

TF "SAME" padding of a stride-2 convolution puts one more zero after the input than before it, which
``nn.Conv2d``'s symmetric padding cannot express. The straightforward way copies the input into a padded tensor
(``F.pad``) first; for the stride-2 depthwise convolutions of a photo-sized input those are the largest tensors of
the network (96 channels at half the photo's resolution). ``Conv2dSame`` instead gives grouped convolutions
leading zero taps and the larger padding on both sides (exactly the same outputs).

Printed: the default model's backbone (inference path, as ``Os2dModel.extract_features`` runs it) on a photo of
sqrt(w*h) = 1182 (1024x1365) and on a batch of 16 second-look crops of 160x160, median of ``--repeats`` with the two
arms alternating in one process, and the largest difference between their features.

    python benchmarks/same_padding.py
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from round_robin import alternating_medians, backbone_inputs  # noqa: E402  (benchmarks/, the script's folder)
from torch import Tensor  # noqa: E402

from os2d.detector import Detector  # noqa: E402
from os2d.model.backbone.efficientnet_lite import Conv2dSame, same_padding  # noqa: E402

ZERO_TAPS = Conv2dSame.same_args  # forward and the fused conv + ReLU6 (relu6_conv) both take their arguments here


def explicit_pad(self: Conv2dSame, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """The padded-copy way (``F.pad`` of the input before every non-static convolution)."""
    if self._static:
        return x, self.weight, (self.padding[0], self.padding[1])
    top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
    left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
    return F.pad(x, (left, right, top, bottom)), self.weight, (0, 0)


ARMS: dict[str, Callable] = {"F.pad": explicit_pad, "zero taps": ZERO_TAPS}


def timed(run: Callable[[], Tensor], repeats: int) -> tuple[dict[str, float], float]:
    """Median seconds of ``run`` per arm (:func:`round_robin.alternating_medians`) and the largest absolute
    difference between the arms' outputs."""

    def arm(same_args: Callable) -> Callable[[], Tensor]:
        def call() -> Tensor:
            Conv2dSame.same_args = same_args
            return run()
        return call

    try:
        times, outs = alternating_medians({name: arm(f) for name, f in ARMS.items()}, repeats)
    finally:
        Conv2dSame.same_args = ZERO_TAPS
    return times, float((outs["F.pad"] - outs["zero taps"]).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    model = Detector.from_weights(args.weights).model.eval()
    inputs = backbone_inputs()
    print(f"backbone {model.config.backbone}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| input | F.pad s | zero taps s | speed-up | max |diff| |")
    print("|---|---:|---:|---:|---:|")
    with torch.no_grad():
        for name, x in inputs.items():
            t, diff = timed(lambda x=x: model.extract_features(x, align_to_anchors=False), args.repeats)
            print(f"| {name} | {t['F.pad']:.3f} | {t['zero taps']:.3f} | {t['F.pad'] / t['zero taps']:.2f}x "
                  f"| {diff:.1e} |")


if __name__ == "__main__":
    main()
