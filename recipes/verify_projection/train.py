"""Train the second look's projection on the crops of ``collect.py``: a (C, C) matrix P, started at the identity,
through which the crop's cells and the class grids pass (L2-normalised again) before the second look's cosines.

The second look's score of a detection is ``raw * v^2 * (v / max(v, r))^4`` (gamma 2, rivals 4: the defaults), v
the crop's agreement with its class and r its best agreement with another class of the photo's gallery. mAP ranks
all detections of a class over all photos, so the loss is pairwise over them: for a class, every (true positive,
false positive) pair of a batch costs ``softplus((log score_fp - log score_tp) / T)``. Detections on "difficult"
boxes and with raw score <= 0 take no part. A penalty ``weight_decay * ||P - I||^2`` keeps P near the identity.
Batches alternate between the sets; each draws one class with true positives, up to 64 of them and 256 of its false
positives. 20% of each set's photos are held back (by photo, seeded) and their pair loss and pair accuracy printed
(sanity only: the tuning sets decide, ``benchmarks/verify_projection.py``). The last step's P is written.

    python recipes/verify_projection/train.py ~/os2d-runs/vproj/fl27-rest.pt ~/os2d-runs/vproj/synth-train.pt \\
        --out ~/os2d-runs/vproj/projection.pt
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

GAMMA, RIVALS, MIN_AGREEMENT = 2.0, 4.0, 0.01  # the second look's defaults (InferenceConfig, verify.MIN_AGREEMENT)


@dataclass
class CropSet:
    cells: Tensor  # (N, I, C) float16
    labels: Tensor  # (N,) class of each detection
    tp: Tensor  # (N,) 1 / 0 / -1
    log_raw: Tensor  # (N,)
    member: Tensor  # (N, V) bool: view v is in the gallery of the detection's photo
    kernels: Tensor  # (V, I, C)
    view_class: Tensor  # (V,)
    photo: Tensor  # (N,)


def load(path: Path) -> CropSet:
    d = torch.load(path)
    view_class = d["view_class"].long()
    in_gallery = torch.zeros(len(d["galleries"]), int(view_class.max()) + 1, dtype=torch.bool)
    for k, g in enumerate(d["galleries"]):
        in_gallery[k, g] = True
    photo = d["image"].long()  # (N,) index into the galleries: one per photo with detections
    member = in_gallery[photo][:, view_class]  # (N, V)
    scores = d["scores"].float()
    return CropSet(d["cells"], d["labels"].long(), d["tp"].long(), scores.clamp(min=1e-6).log(), member,
                   d["kernels"].float(), view_class, photo)


def log_scores(s: CropSet, idx: Tensor, p: Tensor) -> Tensor:
    """(n,) log of the second look's score of detections ``idx`` with projection ``p``."""
    x = F.normalize(s.cells[idx].float() @ p, dim=-1, eps=1e-6)  # (n, I, D)
    k = F.normalize(s.kernels @ p, dim=-1, eps=1e-6)  # (V, I, D)
    a = torch.einsum("nic,vic->nv", x, k) / x.shape[1]  # (n, V) mean cosine over the inner cells
    own = s.view_class[None] == s.labels[idx][:, None]  # (n, V)
    v = a.masked_fill(~own, -2.0).amax(dim=1).clamp(min=MIN_AGREEMENT)
    other = s.member[idx] & ~own
    r = a.masked_fill(~other, -2.0).amax(dim=1).clamp(min=MIN_AGREEMENT)
    return s.log_raw[idx] + GAMMA * v.log() + RIVALS * (v.log() - torch.maximum(v, r).log())


def pair_loss(s: CropSet, idx: Tensor, p: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Mean pairwise loss and pair accuracy of the (tp, fp) pairs among ``idx`` (one class)."""
    ls = log_scores(s, idx, p)
    tp = s.tp[idx] == 1
    fp = s.tp[idx] == 0
    diff = ls[fp][None, :] - ls[tp][:, None]  # (tp, fp)
    return F.softplus(diff / temperature).mean(), (diff < 0).float().mean()


def split(s: CropSet, seed: int) -> tuple[Tensor, Tensor]:
    """Boolean masks (train, held back) over the detections, by photo."""
    photos = s.photo.unique()
    g = torch.Generator().manual_seed(seed)
    back = photos[torch.randperm(len(photos), generator=g)[: len(photos) // 5]]
    held = torch.isin(s.photo, back)
    usable = (s.tp >= 0) & (s.log_raw > math.log(1e-6))
    return usable & ~held, usable & held


def batch(s: CropSet, mask: Tensor, g: torch.Generator, n_tp: int = 64, n_fp: int = 256) -> Tensor | None:
    classes = s.labels[mask & (s.tp == 1)].unique()
    if len(classes) == 0:
        return None
    c = classes[torch.randint(len(classes), (1,), generator=g)]
    tp = (mask & (s.tp == 1) & (s.labels == c)).nonzero().squeeze(1)
    fp = (mask & (s.tp == 0) & (s.labels == c)).nonzero().squeeze(1)
    if len(fp) == 0:
        return None
    tp = tp[torch.randperm(len(tp), generator=g)[:n_tp]]
    fp = fp[torch.randperm(len(fp), generator=g)[:n_fp]]
    return torch.cat([tp, fp])


@torch.no_grad()
def evaluate(s: CropSet, mask: Tensor, p: Tensor, temperature: float) -> tuple[float, float]:
    """Pair loss and accuracy over every class of ``mask`` (all its pairs)."""
    losses, accs, weights = [], [], []
    for c in s.labels[mask & (s.tp == 1)].unique():
        idx = (mask & (s.labels == c)).nonzero().squeeze(1)
        if not bool((s.tp[idx] == 0).any()):
            continue
        loss, acc = pair_loss(s, idx, p, temperature)
        w = int((s.tp[idx] == 1).sum()) * int((s.tp[idx] == 0).sum())
        losses.append(float(loss) * w)
        accs.append(float(acc) * w)
        weights.append(w)
    total = sum(weights)
    return (sum(losses) / total, sum(accs) / total) if total else (math.nan, math.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    sets = [load(p) for p in args.sets]
    masks = [split(s, args.seed) for s in sets]
    for path, s, (tr, he) in zip(args.sets, sets, masks, strict=True):
        print(f"{path.name}: {len(s.tp)} detections, train {int((tr & (s.tp == 1)).sum())} tp / "
              f"{int((tr & (s.tp == 0)).sum())} fp, held back {int((he & (s.tp == 1)).sum())} tp")
    c = sets[0].cells.shape[-1]
    eye = torch.eye(c)
    p = eye.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)

    def report(step: int) -> None:
        parts = []
        for path, s, (tr, he) in zip(args.sets, sets, masks, strict=True):
            (lt, at), (lh, ah) = evaluate(s, tr, p.detach(), args.temperature), evaluate(s, he, p.detach(),
                                                                                         args.temperature)
            parts.append(f"{path.stem}: train {lt:.4f}/{100 * at:.1f}% held {lh:.4f}/{100 * ah:.1f}%")
        print(f"step {step:5d} |P-I| {float((p.detach() - eye).norm()):.3f} " + "  ".join(parts), flush=True)

    report(0)
    for step in range(1, args.steps + 1):
        k = step % len(sets)
        idx = batch(sets[k], masks[k][0], g)
        if idx is None:
            continue
        loss, _ = pair_loss(sets[k], idx, p, args.temperature)
        loss = loss + args.weight_decay * (p - eye).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == args.steps:
            report(step)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"projection": p.detach().clone(), "steps": args.steps, "lr": args.lr,
                "weight_decay": args.weight_decay, "temperature": args.temperature,
                "sets": [str(x) for x in args.sets]}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
