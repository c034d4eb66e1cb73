"""Zoomed second pass: re-localise the best detections with the heads run at the class's own scale.

The first pass runs the heads on pyramid levels chosen for the whole image, so an object is often smaller or
larger than the anchor (``ModelConfig.anchor_size``, 240 px), and the TransformNet has to bridge both the scale
and the class's aspect ratio (it barely stretches the square anchor: wide packages get squarish boxes). This
step takes each of an image's ``refine_top`` best detections and crops a context window around it (``context``
times the object) from the photo, resampled so that the object, with its class image's aspect ratio and the
detection's area, is exactly anchor-sized. The heads of that class then run on the crop, and the detection takes
the box and alignment of the crop's best location whose box overlaps the detection's by IoU >= ``min_iou`` (so
it cannot jump to a neighbouring facing), but only if the second look's agreement with the class
(:func:`os2d.inference.verify.agreement`) is higher there than at its old alignment (``check``); its score is
unchanged. Overlapping results are merged by the detections' per-class NMS. Off by default
(``InferenceConfig.refine_top`` = 0): it failed its rule on the tuning sets twice (README, "Zoomed
re-localisation").

Crops (``InferenceConfig.refine_crop``):
    aspect   isotropic: the object keeps its shape, and the crop's anchor grid takes the class image's aspect
             ratio (the anchors of ``ModelConfig.anchor_aspect_power`` = 1), so the identity alignment already
             has the class's shape;
    squeeze  anisotropic: the crop squeezes the object to a square, so the model's square anchor fits it at the
             identity alignment, and boxes are mapped back through the same squeeze.

Shape glossary: N detections, n of one class, V views, S the class grid side, C channels, h x w crop cells.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from os2d.inference.verify import CROP_CHUNK, agreement, box_corners, class_views, sample_crops
from os2d.model.head import os2d_head
from os2d.ops import batched_nms, box_iou
from os2d.results import Detections

REFINE_CROPS = ("aspect", "squeeze")
MAX_CROP_SIDE = 1024  # crop pixels per side at most (very elongated classes)


def _crop_layout(boxes: Tensor, aspect: float, anchor: float, context: float, crop: str
                 ) -> tuple[Tensor, Tensor, int, int]:
    """Per detection (n, 4) xyxy in image pixels: the context window's corners (n, 4, 2) in image pixels, the
    (n, 2) crop pixels per image pixel (kx, ky), and the crop size (w, h) shared by the class."""
    power = 1.0 if crop == "aspect" else 0.0
    tw, th = anchor * aspect ** (power / 2), anchor * aspect ** (-power / 2)  # the object in the crop
    cw = min(MAX_CROP_SIDE, max(64, round(context * tw)))
    ch = min(MAX_CROP_SIDE, max(64, round(context * th)))
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    area = bw * bh
    ow, oh = (area * aspect).sqrt(), (area / aspect).sqrt()  # the object: the detection's area, the class's shape
    k = torch.stack([tw / ow, th / oh], dim=1)  # (n, 2)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    tl = centre - torch.tensor([cw / 2, ch / 2]) / k
    br = centre + torch.tensor([cw / 2, ch / 2]) / k
    return box_corners(torch.cat([tl, br], dim=1)), k, cw, ch


@torch.no_grad()
def relocalise(model, image: Tensor, boxes: Tensor, labels: Tensor, kernels: Tensor, view_class: Tensor,
               view_aspect: Tensor, *, context: float = 2.0, min_iou: float = 0.3, crop: str = "aspect"
               ) -> tuple[Tensor, Tensor]:
    """New (N, 4) boxes and (N, 4, 2) corners for ``boxes`` (N, 4) xyxy in the pixels of ``image`` (3, H, W)
    in [0, 1]; a detection with no crop location overlapping it by ``min_iou`` keeps its box (corners: NaN)."""
    if crop not in REFINE_CROPS:
        raise ValueError(f"refine crop must be one of {REFINE_CROPS}, got {crop!r}")
    cfg = model.config
    height, width = image.shape[-2:]
    new_boxes = boxes.clone().float()
    new_corners = torch.full((boxes.shape[0], 4, 2), math.nan)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)  # (n,)
        views, aspect = class_views(c, view_class, view_aspect)
        if views.numel() == 0:
            continue
        if view_aspect.numel():  # views of that shape only (not the 90-degree rotations of a non-square class)
            views = views[(view_aspect[views].float() / aspect - 1).abs() < 1e-3]
        n = len(idx)
        window, k, cw, ch = _crop_layout(boxes[idx].float(), aspect, float(cfg.anchor_size), context, crop)
        crops = sample_crops(image, window, cw, ch)  # (n, 3, ch, cw)
        vk = kernels[views]
        out_boxes, out_corners, out_scores = [], [], []
        for i in range(0, n, CROP_CHUNK):
            feats = model.extract_features(crops[i : i + CROP_CHUNK])  # (b, C, h, w)
            head = os2d_head(feats, vk.to(feats.dtype), model.transform_net, invert_transform=cfg.invert_transform,
                             grid_size=cfg.class_grid_size, pool_border=cfg.pool_border, stride=float(model.stride),
                             anchor_size=cfg.anchor_size,
                             aspect=torch.full((len(views),), aspect) if crop == "aspect" else None,
                             aspect_power=1.0 if crop == "aspect" else 0.0)
            b = feats.shape[0]
            out_scores.append(head.scores.reshape(b, -1))  # (b, V*h*w)
            out_boxes.append(head.boxes_xyxy.reshape(b, -1, 4))
            out_corners.append(head.corners_xy.reshape(b, -1, 4, 2))
        scores, cboxes, ccorners = torch.cat(out_scores), torch.cat(out_boxes), torch.cat(out_corners)
        tl = window[:, 0]  # (n, 2) the window's top-left in image pixels
        own = torch.cat([(boxes[idx, :2] - tl) * k, (boxes[idx, 2:] - tl) * k], dim=1)  # (n, 4) in crop pixels
        for j in range(n):
            iou = box_iou(own[j : j + 1], cboxes[j]).squeeze(0)  # (V*h*w,)
            s = scores[j].masked_fill(iou < min_iou, -math.inf)
            best = int(s.argmax())
            if not math.isfinite(float(s[best])):
                continue
            kk = torch.cat([k[j], k[j]])
            new_boxes[idx[j]] = cboxes[j, best] / kk + torch.cat([tl[j], tl[j]])
            new_corners[idx[j]] = ccorners[j, best] / k[j] + tl[j]
    new_boxes[:, 0::2] = new_boxes[:, 0::2].clamp(0, width)
    new_boxes[:, 1::2] = new_boxes[:, 1::2].clamp(0, height)
    return new_boxes, new_corners


def refine_detections(model, dets: Detections, image: Tensor, kernels: Tensor, view_class: Tensor,
                      view_aspect: Tensor, *, top: int, nms_iou: float, context: float = 2.0, min_iou: float = 0.3,
                      crop: str = "aspect", check: bool = True) -> Detections:
    """``dets`` (original pixels, sorted by score) with the boxes and corners of their ``top`` best re-localised
    on zoomed crops of ``image`` (3, h, w) in [0, 1], the photo or a resized copy of it; then per-class NMS
    (``nms_iou``) on the new boxes, keeping the order. ``check``: a detection takes its new alignment only when
    the second look's agreement (:func:`os2d.inference.verify.agreement`) with its class is higher there."""
    if len(dets) == 0 or top <= 0:
        return dets
    order = torch.argsort(dets.scores, descending=True, stable=True)
    dets = dets.filter(order)
    m = min(top, len(dets))
    width, height = dets.image_size
    scale = torch.tensor([image.shape[-1] / width, image.shape[-2] / height])
    s4 = torch.cat([scale, scale])
    boxes, corners = relocalise(model, image, dets.boxes_xyxy[:m].float() * s4, dets.labels[:m], kernels,
                                view_class, view_aspect, context=context, min_iou=min_iou, crop=crop)
    moved = torch.isfinite(corners).all(dim=2).all(dim=1)  # (m,)
    if check and bool(moved.any()):  # keep a new box only where the class agrees with it better than the old one
        idx = moved.nonzero().squeeze(1)
        both = torch.cat([dets.corners_xy[:m][idx].float() * scale, corners[idx]])  # (2k, 4, 2) image pixels
        labels = dets.labels[:m][idx]
        v = agreement(model, image, both, torch.cat([labels, labels]), kernels, view_class, view_aspect)
        moved[idx] = v[len(idx):] > v[: len(idx)]
    out_boxes, out_corners = dets.boxes_xyxy.clone(), dets.corners_xy.clone()
    out_boxes[:m][moved] = (boxes / s4)[moved].to(out_boxes.dtype)
    out_corners[:m][moved] = (corners / scale)[moved].to(out_corners.dtype)
    dets.boxes_xyxy, dets.corners_xy = out_boxes, out_corners
    keep = batched_nms(dets.boxes_xyxy, dets.scores, dets.labels, nms_iou)
    keep = keep[dets.scores[keep].argsort(descending=True, stable=True)]
    return dets.filter(keep)


__all__ = ["REFINE_CROPS", "refine_detections", "relocalise"]
