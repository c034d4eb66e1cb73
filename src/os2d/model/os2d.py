"""The OS2D model and its composition root :func:`build_os2d`.

The model maps tensors to raw head outputs; image loading, pyramids, decoding and NMS live in
``os2d.inference`` and the user-facing :class:`os2d.Detector`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from os2d.calibration import Calibration
from os2d.config import ModelConfig
from os2d.model.backbone import build_backbone
from os2d.model.backbone.fuse import DEFAULT_INFERENCE_PATH, FusedBackboneCache, InferencePath
from os2d.model.correlation import class_kernels, resize_class_features
from os2d.model.head import HeadOutput, os2d_head
from os2d.model.head_windows import WindowOutput, head_windows
from os2d.model.int8_transform import HeadsPrecision, Int8TransformCache, int8_supported
from os2d.model.transform_net import TransformNet
from os2d.model.trunk_precision import TrunkPrecision, bf16_applies


class Os2dModel(nn.Module):
    """Siamese feature extractor + TransformNet.

    One backbone serves the input and the class images (the paper found untied branches generalise worse to
    new classes). All image inputs are RGB tensors in [0, 1]; the backbone's own normalisation is applied here.
    """

    def __init__(self, backbone: nn.Module, transform_net: TransformNet, config: ModelConfig) -> None:
        super().__init__()
        # channels_last makes oneDNN convolutions ~1.5x faster on CPU (ResNet-50 at 960x1280: 2.1 s -> 1.4 s)
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.transform_net = transform_net
        self.config = config
        self.calibration: Calibration | None = None  # os2d.calibration, from the weights file (None: scores only)
        self.inference_path = DEFAULT_INFERENCE_PATH
        self.inference_cache = FusedBackboneCache()  # the folded copy; empty in copies and pickles
        self.eager_cache = FusedBackboneCache()  # an eager folded copy for bf16 beside a traced inference_cache
        self.int8_cache = Int8TransformCache()  # TransformNet's int8 copy (heads_precision "int8"); same rules

    @property
    def inference_path(self) -> InferencePath:
        """Which backbone inference features run (:class:`~os2d.model.backbone.fuse.InferencePath`; default
        ``"folded+jit"``). Set it with the enum or its value: ``model.inference_path = "plain"``."""
        return self._inference_path

    @inference_path.setter
    def inference_path(self, path: InferencePath | str) -> None:
        self._inference_path = InferencePath(path)

    @property
    def stride(self) -> int:
        return int(self.backbone.stride)

    @property
    def feature_channels(self) -> int:
        return int(self.backbone.out_channels)

    def extract_features(self, images: Tensor, *, align_to_anchors: bool = True,
                         precision: TrunkPrecision | str = TrunkPrecision.FP32) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, C, h, w) with h = ceil(H/16) (ceil((H + pad)/16) for backbones
        with an ``anchor_pad``, which pad input images so that feature centres meet the anchor centres).

        ``precision``: ``"bf16"`` runs the backbone under bfloat16 autocast where that applies (inference on a
        device with bf16 dot products, :mod:`os2d.model.trunk_precision`) and returns float32 features."""
        x = self.backbone.normalize(images)
        pad = int(getattr(self.backbone, "anchor_pad", 0))
        if pad and align_to_anchors:
            h, w = x.shape[-2:]
            s = self.stride
            x = F.pad(x, (pad, (-(w + pad)) % s, pad, (-(h + pad)) % s))  # zero = mid-grey after normalize
        x = x.contiguous(memory_format=torch.channels_last)
        if TrunkPrecision(precision) is TrunkPrecision.BF16 and x.dtype == torch.float32 and self._inferring() \
                and bf16_applies(x.device):
            net = self._feature_net(traced=False)  # a traced, frozen graph would not autocast
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return net(x).float().contiguous()
        return self._feature_net()(x).contiguous()

    def _inferring(self) -> bool:
        """Inference proper: eval mode, no autograd, no tracing, compiling or export."""
        return not (self.training or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting()
                    or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())

    def _feature_net(self, *, traced: bool = True) -> nn.Module:
        """The backbone, or in inference (eval mode, no autograd) the copy that ``inference_path`` names; with
        ``traced`` False an eager folded copy where that copy is a TorchScript graph (kept beside it, so that
        float32 and bf16 calls do not rebuild each other's copy)."""
        if (self.inference_path is InferencePath.PLAIN or not hasattr(self.backbone, "conv_bn_pairs")
                or not self._inferring()):
            return self.backbone
        net = self.inference_cache.get(self.backbone, self.inference_path)
        if not traced and isinstance(net, torch.jit.ScriptModule):
            net = self.eager_cache.get(self.backbone, InferencePath.FOLDED)
        return net

    def class_feature(self, class_image: Tensor) -> Tensor:
        """One class image (1, 3, h, w) in [0, 1], already resized to area ~240^2 -> (C, S, S) normalised grid.

        The one definition of a class grid: no anchor padding (class images are not searched, they are resized
        to S x S), features resized bilinearly. :meth:`class_features` and the ONNX class encoder call it.
        """
        features = self.extract_features(class_image, align_to_anchors=False)
        return resize_class_features(features, self.config.class_grid_size)

    def class_features(self, class_images: Sequence[Tensor]) -> Tensor:
        """Class images (each (3, h, w) in [0, 1], already resized to area ~240^2) -> (K, C, S, S) normalised.

        Each image runs on its own (sizes differ), as in the reference.
        """
        s = self.config.class_grid_size
        if len(class_images) == 0:
            return torch.zeros(0, self.feature_channels, s, s)
        return torch.stack([self.class_feature(im[None]) for im in class_images])

    def class_kernels(self, class_images: Sequence[Tensor]) -> Tensor:
        """Class images -> (K, S*S, C) kernels for :meth:`forward`."""
        return class_kernels(self.class_features(class_images))

    def heads(self, features: Tensor, kernels: Tensor, *, class_chunk: int | None = None,
              with_detached_scores: bool = False, aspect: Tensor | None = None,
              precision: HeadsPrecision | str = HeadsPrecision.FP32,
              transform_grad_at: Callable[[Tensor], Tensor] | None = None) -> HeadOutput:
        """Head outputs for precomputed input features (B, C, H, W) and class kernels (K, S*S, C).

        ``aspect``: (K,) aspect ratios (w / h) of the class views' images, used when the model's
        ``anchor_aspect_power`` is not 0 (None: square anchors).
        ``precision``: ``"int8"`` runs TransformNet's convolutions in int8 (:mod:`os2d.model.int8_transform`)
        where that applies (eval mode, no autograd, float32 on a CPU that supports it); float32 otherwise.
        ``transform_grad_at``: training only, TransformNet's gradient only where this picks (see
        :func:`os2d.model.head.os2d_head`).
        """
        cfg = self.config
        return os2d_head(
            features, kernels.to(features.dtype), self._transform_for(features, HeadsPrecision(precision)),
            invert_transform=cfg.invert_transform, grid_size=cfg.class_grid_size, pool_border=cfg.pool_border,
            stride=float(self.stride), anchor_size=cfg.anchor_size, class_chunk=class_chunk,
            with_detached_scores=with_detached_scores, aspect=aspect, aspect_power=cfg.anchor_aspect_power,
            transform_grad_at=transform_grad_at,
        )

    def _transform_for(self, features: Tensor, precision: HeadsPrecision):
        """The TransformNet to run: its int8 copy when ``precision`` asks for it and it applies."""
        if (precision in (HeadsPrecision.INT8, HeadsPrecision.INT8_EXACT) and not self.training
                and not torch.is_grad_enabled()
                and isinstance(self.transform_net, TransformNet)  # not a baseline's stand-in (IdentityTransform)
                and features.device.type == "cpu" and features.dtype == torch.float32
                and all(p.device.type == "cpu" for p in self.transform_net.parameters()) and int8_supported()):
            return self.int8_cache.get(self.transform_net)
        return self.transform_net

    def heads_exact(self, features: Tensor, precision: HeadsPrecision | str) -> bool:
        """Whether :meth:`heads` at ``precision`` runs the float32 TransformNet on these features (int8 may not
        apply: training, autograd, CUDA, a CPU without 8-bit dot products)."""
        return self._transform_for(features, HeadsPrecision(precision)) is self.transform_net

    def head_windows(self, features: Tensor, kernels: Tensor, views: Tensor, top: Tensor, left: Tensor,
                     size: tuple[int, int] = (3, 3), *, aspect: Tensor | None = None) -> WindowOutput:
        """The exact (float32) head values at windows of ``size`` locations from (``top``, ``left``) of class
        views ``views`` (P,), from one image's (1, C, H, W) features (:func:`os2d.model.head_windows.head_windows`)."""
        cfg = self.config
        return head_windows(features, kernels, self.transform_net, views, top, left, size,
                            invert_transform=cfg.invert_transform, grid_size=cfg.class_grid_size,
                            pool_border=cfg.pool_border, stride=float(self.stride), anchor_size=cfg.anchor_size,
                            aspect=aspect, aspect_power=cfg.anchor_aspect_power)

    def forward(self, images: Tensor, kernels: Tensor, class_chunk: int | None = None, *,
                aspect: Tensor | None = None, transform_grad_at: Callable[[Tensor], Tensor] | None = None
                ) -> HeadOutput:
        """(B, 3, H, W) images in [0, 1] and (K, S*S, C) kernels -> head outputs at the images' resolution."""
        return self.heads(self.extract_features(images), kernels, class_chunk=class_chunk,
                          with_detached_scores=self.training, aspect=aspect, transform_grad_at=transform_grad_at)


def build_os2d(config: ModelConfig | None = None, *, pretrained_backbone: bool = False) -> Os2dModel:
    """Composition root: build an :class:`Os2dModel` from a :class:`ModelConfig`.

    Args:
        pretrained_backbone: load bundled ImageNet weights into the backbone (EfficientNet-Lite only; ResNet
            weights come from user files via ``os2d.weights``). TransformNet starts at the identity.
    """
    config = config or ModelConfig()
    backbone = build_backbone(config.backbone, pretrained=pretrained_backbone, frozen_bn=config.frozen_bn)
    transform_net = TransformNet(config.num_transform_params, config.class_grid_size**2,
                                 frozen_bn=config.frozen_bn_transform)
    model = Os2dModel(backbone, transform_net, config)
    model.eval()
    return model
