"""The OS2D training objective: recognition (ranked list loss or contrastive) + smooth-L1 localisation.

Paper Sec. 4, Eq. 1-6; the reference's ``Os2dObjective`` where the two differ (documented per function).
Shape glossary: B patches, K classes of the batch, A = h*w anchors of the feature map.

Convention:
    Scores ``s`` are the head's pooled correlations (in [0, 1] in practice). Hinge pieces carry the reference's
    factor 0.5: ``l_pos = 0.5 max(m_pos - s, 0)``, ``l_neg = 0.5 max(s - m_neg, 0)``; the contrastive loss uses
    ``0.5 max(., 0)^2`` (the classic contrastive loss of Hadsell et al.). Targets: 1 positive, 0 negative,
    -1 ignore (:mod:`os2d.train.targets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from os2d.model.box_coder import encode
from os2d.model.head import HeadOutput
from os2d.train.sampler import TrainBatch
from os2d.train.targets import NEGATIVE, POSITIVE, assign, remap

__all__ = [
    "LOSS_KINDS",
    "LossConfig",
    "Os2dObjective",
    "contrastive_loss",
    "localization_loss",
    "rll_loss",
    "rll_negative_weights",
]

LOSS_KINDS = ("rll", "contrastive")
RLL_ACTIVE_EPS = 1e-5  # a class takes part in the RLL negative term if its hardest negative loss exceeds this


@dataclass(frozen=True)
class LossConfig:
    """Objective options (reference ``train.objective.*`` defaults; V1 uses ``loc_weight=0.2``)."""

    kind: str = "rll"  # "rll" (ranked list loss, default) | "contrastive" (CL with hard-negative mining)
    pos_margin: float = 0.6  # m_pos (CL experiments: 1.0)
    neg_margin: float = 0.5  # m_neg
    rll_neg_weight_ratio: float = 0.001  # weight of a negative at the margin / weight of the hardest one
    neg_to_pos_ratio: int = 3  # CL: hardest negatives kept per positive (jointly over the batch)
    class_neg_weight: float = 1.0  # multiplies the negative recognition term
    loc_weight: float = 0.0  # V2: 0.0 (loc and rec signals conflict for TransformNet); V1: 0.2
    pos_iou: float = 0.5  # localisation targets: IoU(anchor, GT) >= pos_iou -> positive
    neg_iou: float = 0.1  # ... < neg_iou -> negative, in between ignored
    remap: bool = True  # recognition targets from the predicted boxes (paper: target remapping)
    remap_pos_iou: float = 0.8
    remap_neg_iou: float = 0.4
    train_transform_on_negs: bool = False  # False: negatives use the scores with detached transformations

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if not 0.0 < self.rll_neg_weight_ratio < 1.0:
            raise ValueError(f"rll_neg_weight_ratio must be in (0, 1), got {self.rll_neg_weight_ratio}")
        if self.neg_to_pos_ratio < 0 or self.class_neg_weight < 0 or self.loc_weight < 0:
            raise ValueError("neg_to_pos_ratio, class_neg_weight and loc_weight must be non-negative")
        for lo, hi, what in ((self.neg_iou, self.pos_iou, ""), (self.remap_neg_iou, self.remap_pos_iou, "remap_")):
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"need 0 <= {what}neg_iou <= {what}pos_iou <= 1, got {lo}, {hi}")


# ---------------------------------------------------------------------------------------- loss terms


def hinge_pos(scores: Tensor, margin: float) -> Tensor:
    """``0.5 max(m_pos - s, 0)`` (Eq. 1 with the reference's factor 0.5)."""
    return 0.5 * (margin - scores).clamp(min=0)


def hinge_neg(scores: Tensor, margin: float) -> Tensor:
    """``0.5 max(s - m_neg, 0)``."""
    return 0.5 * (scores - margin).clamp(min=0)


@torch.no_grad()
def rll_negative_weights(neg_losses: Tensor, neg_mask: Tensor, ratio: float = 0.001) -> tuple[Tensor, Tensor]:
    """Weights of the negatives in the ranked list loss (Eq. 6), detached.

    Per class (row): ``M`` = the largest negative loss over all its anchors in all images of the batch (the
    reference pools over images; the paper says per image-class pair), ``T = ln(1 / ratio) / M``,
    ``w = exp(T (l - M))`` for active negatives (``l > 0``), 0 otherwise - the hardest negative weighs
    ``1 / ratio`` times a negative at the margin. Weights are normalised to sum 1 per class and divided by the
    number of active classes (``M > 1e-5``), so the negative term is the mean over classes of weighted means.

    Args:
        neg_losses: (K, N) per-anchor negative losses ``l_neg``.
        neg_mask: (K, N) bool, which entries are negatives.
    Returns:
        weights (K, N) (no gradient) and the number of active classes (scalar tensor).
    """
    losses = neg_losses.detach().float().masked_fill(~neg_mask, 0.0)
    if losses.numel() == 0:
        return torch.zeros_like(losses), losses.new_zeros(())
    hardest = losses.max(dim=1).values  # (K,)
    active = hardest > RLL_ACTIVE_EPS
    temperature = math.log(1.0 / ratio) / torch.where(active, hardest, torch.ones_like(hardest))
    weights = torch.exp(temperature[:, None] * (losses - hardest[:, None])) * (losses > 0)
    weights = weights * active[:, None]
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=torch.finfo(weights.dtype).tiny)
    num_active = active.sum()
    weights = (weights / num_active.clamp(min=1)).to(neg_losses.dtype)
    return weights, num_active.to(losses.dtype)


def rll_loss(pos_losses: Tensor, neg_losses: Tensor, neg_mask: Tensor,
             ratio: float = 0.001) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ranked list loss (Eq. 5).

    Args:
        pos_losses: (P,) ``l_pos`` of the positives.
        neg_losses: (K, N) ``l_neg``; neg_mask (K, N) marks the negatives.
    Returns:
        positive term (sum of ``l_pos`` / #active positives, 0 if none), negative term (sum ``w l_neg``),
        #active positives, #active negatives.
    """
    num_active_pos = (pos_losses > 0).sum()
    pos_term = pos_losses.sum() / num_active_pos.clamp(min=1)
    weights, _ = rll_negative_weights(neg_losses, neg_mask, ratio)
    neg_term = (weights * neg_losses.masked_fill(~neg_mask, 0.0)).sum()
    num_active_neg = ((neg_losses > 0) & neg_mask).sum()
    return pos_term, neg_term, num_active_pos.to(pos_term.dtype), num_active_neg.to(pos_term.dtype)


def contrastive_loss(pos_losses: Tensor, neg_losses: Tensor, neg_to_pos_ratio: int) -> tuple[Tensor, Tensor, Tensor]:
    """Contrastive loss with hard-negative mining (Eq. 3): squared hinges, the ``ratio * #pos`` negatives
    of largest loss over the whole batch, both sums divided by #pos.

    Args:
        pos_losses: (P,) squared positive hinges; neg_losses: (N,) squared negative hinges.
    Returns:
        positive term, negative term, number of negatives kept. A batch without positives has no negative
        term either (``ratio * 0`` negatives).
    """
    num_pos = pos_losses.numel()
    num_neg = min(neg_to_pos_ratio * num_pos, neg_losses.numel())
    hard = neg_losses.topk(num_neg).values if num_neg else neg_losses[:0]
    denom = max(num_pos, 1)
    return pos_losses.sum() / denom, hard.sum() / denom, pos_losses.new_tensor(float(num_neg))


def localization_loss(pred_codes: Tensor, target_codes: Tensor) -> Tensor:
    """Smooth-L1 (beta 1) summed over the 4 box coordinates (Eq. 2): (..., 4) x2 -> (...)."""
    return F.smooth_l1_loss(pred_codes, target_codes, reduction="none", beta=1.0).sum(dim=-1)


# -------------------------------------------------------------------------------------------- module


@dataclass
class _Targets:
    rec: Tensor  # (B, K, A) int8 recognition targets (remapped if enabled)
    loc: Tensor  # (B, K, A) int8 localisation targets
    matched: Tensor  # (B, K, A, 4) matched GT boxes


class Os2dObjective(nn.Module):
    """``loss = L_rec + loc_weight * L_loc`` on the head outputs of a :class:`TrainBatch`.

    Args:
        config: loss options.
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    # ---------------------------------------------------------------------------------------- targets

    def targets(self, out: HeadOutput, batch: TrainBatch) -> _Targets:
        """Localisation targets from the anchors (IoU pos_iou/neg_iou) and recognition targets from the
        predicted boxes (remap_pos_iou/remap_neg_iou) when ``remap``, else the localisation ones."""
        cfg = self.config
        b, k = out.scores.shape[:2]
        if len(batch.boxes) != b or batch.num_classes != k:
            raise ValueError(f"head output has {b} images x {k} classes but the batch has {len(batch.boxes)} "
                             f"images x {batch.num_classes} classes")
        anchors = out.anchors()  # (A, 4)
        pred_boxes = out.boxes_xyxy.detach().flatten(2, 3)  # (B, K, A, 4)
        rec, loc, matched = [], [], []
        for i in range(b):
            gt = (batch.boxes[i], batch.labels[i], batch.difficult[i])
            loc_i, matched_i = assign(anchors, *gt, k, cfg.pos_iou, cfg.neg_iou)
            loc.append(loc_i)
            matched.append(matched_i)
            rec.append(remap(pred_boxes[i], *gt, k, cfg.remap_pos_iou, cfg.remap_neg_iou) if cfg.remap else loc_i)
        if b == 0:
            a = anchors.shape[0]
            empty = torch.zeros(0, k, a, dtype=torch.int8, device=anchors.device)
            return _Targets(empty, empty, anchors.new_zeros(0, k, a, 4))
        return _Targets(torch.stack(rec), torch.stack(loc), torch.stack(matched))

    def _neg_scores(self, out: HeadOutput) -> Tensor:
        if self.config.train_transform_on_negs or out.scores_transform_detached is None:
            return out.scores
        return out.scores_transform_detached

    def _pieces(self, scores: Tensor, neg_scores: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.config
        # float32 whatever autocast produced: the RLL temperature ln(1000)/M overflows float16 for small M
        scores, neg_scores = scores.float(), neg_scores.float()
        l_pos = hinge_pos(scores, cfg.pos_margin)
        l_neg = hinge_neg(neg_scores, cfg.neg_margin)
        if cfg.kind == "contrastive":
            return 2.0 * l_pos.square(), 2.0 * l_neg.square()  # 0.5 * max(., 0)^2
        return l_pos, l_neg

    def _loc_losses(self, out: HeadOutput, targets: _Targets) -> Tensor:
        """(B, K, A) smooth-L1 of the predicted codes against the matched GT codes (every anchor)."""
        pred = out.loc_codes().transpose(-1, -2).float()  # (B, K, A, 4)
        target = encode(targets.matched.float(), out.anchors().float())
        return localization_loss(pred, target)

    # ---------------------------------------------------------------------------------------- losses

    def transform_grad_locations(self, out: HeadOutput, batch: TrainBatch) -> Tensor:
        """(B, K, A) bool: where the objective back-propagates into the TransformNet's output (the scores or
        boxes it uses with the transform attached): recognition positives; localisation positives when
        ``loc_weight`` > 0; negatives too with ``train_transform_on_negs``. Only ``out.boxes_xyxy`` (and the
        anchor layout) is read, so a pass without autograd can decide where one with it is needed."""
        cfg = self.config
        t = self.targets(out, batch)
        mask = t.rec == POSITIVE
        if cfg.loc_weight > 0:
            mask |= t.loc == POSITIVE
        if cfg.train_transform_on_negs:
            mask |= t.rec == NEGATIVE
        return mask

    def per_anchor_losses(self, out: HeadOutput, batch: TrainBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Unnormalised per-anchor losses for hard patch mining (reference: no RLL weighting).

        Returns:
            rec_pos (B, K, A): positive recognition loss on recognition positives, else 0;
            rec_neg (B, K, A): negative recognition loss on recognition negatives, else 0;
            loc (B, K, A): localisation loss on localisation positives, else 0.
        """
        t = self.targets(out, batch)
        l_pos, l_neg = self._pieces(out.scores.flatten(2), self._neg_scores(out).flatten(2))
        zero = l_pos.new_zeros(())
        rec_pos = torch.where(t.rec == POSITIVE, l_pos, zero)
        rec_neg = torch.where(t.rec == NEGATIVE, l_neg, zero)
        loc = torch.where(t.loc == POSITIVE, self._loc_losses(out, t), zero)
        return rec_pos, rec_neg, loc

    def forward(self, out: HeadOutput, batch: TrainBatch) -> dict[str, Tensor]:
        """All loss terms and counts. ``"loss"`` is the scalar to back-propagate; the others are detached.

        Keys: loss, loss_rec, loss_rec_pos, loss_rec_neg (before class_neg_weight), loss_loc (before
        loc_weight), num_pos, num_neg (recognition targets), num_loc_pos, num_pos_active (l_pos > 0),
        num_neg_active (RLL: l_neg > 0; CL: hard negatives kept).
        """
        cfg = self.config
        t = self.targets(out, batch)
        scores = out.scores.flatten(2)  # (B, K, A)
        l_pos, l_neg = self._pieces(scores, self._neg_scores(out).flatten(2))
        pos_mask = t.rec == POSITIVE
        neg_mask = t.rec == NEGATIVE
        pos_losses = l_pos[pos_mask]
        if cfg.kind == "rll":
            b, k, a = scores.shape
            neg_kn = l_neg.transpose(0, 1).reshape(k, b * a)  # the reference pools a class over images
            mask_kn = neg_mask.transpose(0, 1).reshape(k, b * a)
            pos_term, neg_term, num_pos_active, num_neg_active = rll_loss(
                pos_losses, neg_kn, mask_kn, cfg.rll_neg_weight_ratio)
        else:
            pos_term, neg_term, num_neg_active = contrastive_loss(pos_losses, l_neg[neg_mask], cfg.neg_to_pos_ratio)
            num_pos_active = (pos_losses > 0).sum().to(scores.dtype)
        loss_rec = pos_term + cfg.class_neg_weight * neg_term

        loc_mask = t.loc == POSITIVE
        num_loc = loc_mask.sum()
        loss_loc = self._loc_losses(out, t)[loc_mask].sum() / num_loc.clamp(min=1)
        # loc_weight 0 (V2) keeps the localisation branch out of the graph (no 0 * inf = NaN risk)
        loss = loss_rec + cfg.loc_weight * loss_loc if cfg.loc_weight > 0 else loss_rec

        def stat(x: Tensor | float) -> Tensor:
            return torch.as_tensor(x, dtype=torch.float32, device=scores.device).detach()

        return {
            "loss": loss,
            "loss_rec": loss_rec.detach(),
            "loss_rec_pos": pos_term.detach(),
            "loss_rec_neg": neg_term.detach(),
            "loss_loc": loss_loc.detach(),
            "num_pos": stat(pos_mask.sum()),
            "num_neg": stat(neg_mask.sum()),
            "num_loc_pos": stat(num_loc),
            "num_pos_active": stat(num_pos_active),
            "num_neg_active": stat(num_neg_active),
        }
