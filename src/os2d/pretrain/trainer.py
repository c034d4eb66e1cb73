"""Pretraining loop: TransformNet regresses random affine warps of real photos; the backbone stays frozen.

Stages (all resumable, outputs under one run folder):
    1. pairs: class crops + warped canvases -> cached backbone features (``cache/``, in shards);
    2. training: Adam on the grid loss at the supervised locations, cosine learning rate, checkpoint every
       ``checkpoint_every`` steps (``checkpoint.pt``; the shuffling of an epoch is a function of the seed, so a
       resumed run replays the same batches);
    3. outputs: ``transform_net.pt`` (:mod:`os2d.train.transform_file`), ``model.pt`` (an os2d checkpoint:
       backbone + pretrained TransformNet, loadable by ``os2d.weights.load_model``) and ``eval.json``
       (held-out alignment error of the identity TransformNet and of the pretrained one).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from os2d.files import atomic_json_dump, atomic_torch_save
from os2d.model.os2d import Os2dModel
from os2d.pretrain.alignment import pair_correlation, predicted_thetas
from os2d.pretrain.config import PretrainConfig
from os2d.pretrain.evaluate import evaluate_alignment, format_table
from os2d.pretrain.grid_loss import grid_loss
from os2d.pretrain.pairs import PairSet, cached_pairs
from os2d.train.optim import schedule_factor, set_lr
from os2d.train.transform_file import save_transform_net
from os2d.weights import read_weights_file, save_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "os2d-pretrain-transform-state"


def _fingerprint(model: Os2dModel, photos: Sequence[Path], config: PretrainConfig, name: str) -> str:
    """What shaped a set of pairs: backbone weights, model config, pair/warp config, the photo list, seed."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model.config.to_dict(), "warp": config.to_dict()["warp"],
                         "canvas": config.canvas_size, "radius": config.supervise_radius,
                         "warps_per_crop": config.warps_per_crop, "shard": config.shard_size,
                         "seed": config.seed, "name": name}, sort_keys=True).encode())
    for p in photos:
        h.update(str(p).encode())
    for k, v in model.backbone.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().sum().item().hex().encode())  # cheap and enough to tell weights apart
    return h.hexdigest()[:16]


def batch_loss(model: Os2dModel, pairs: PairSet, index: torch.Tensor) -> torch.Tensor:
    """Grid loss (image-local units squared) of the TransformNet on the pairs ``index``."""
    feats = pairs.features[index].float()
    kernels = pairs.kernels[index].float()
    corr = pair_correlation(feats, kernels)  # (B, S*S, h, w)
    theta = predicted_thetas(model.transform_net, corr, invert=model.config.invert_transform)  # (B, 2R+1, 2R+1, 2, 3)
    return grid_loss(theta, pairs.thetas[index], model.config.class_grid_size)


def lr_at(step: int, total: int, config: PretrainConfig) -> float:
    """Learning rate of update ``step`` (0-based) of ``total``: a linear warm-up from ``lr / warmup`` to ``lr``
    over ``warmup = min(50, total // 10)`` updates, then a cosine from ``lr`` to ``lr * min_lr_ratio``."""
    warmup = min(50, total // 10)
    return config.lr * schedule_factor(step, total, kind="cosine", min_lr_ratio=config.min_lr_ratio,
                                       warmup_steps=warmup, warmup_factor=0.0, warmup_counts_current=True,
                                       decay_after_warmup=True)


def _identity_copy(model: Os2dModel) -> Os2dModel:
    other = copy.deepcopy(model)
    other.transform_net.reset_to_identity()
    return other.eval()


def pretrain_transform(model: Os2dModel, train_photos: Sequence[Path], eval_photos: Sequence[Path],
                       config: PretrainConfig, out_dir: str | Path, *, progress: bool = True,
                       echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a pretraining run in ``out_dir``; returns the summary also saved as ``eval.json``.

    Args:
        model: its backbone is frozen and used for features; its TransformNet is the starting point.
        echo: called with human-readable progress lines (the CLI prints them).
    """
    from tqdm import tqdm

    say = echo or logger.info
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.eval()
    t_start = time.time()

    train_key = _fingerprint(model, train_photos, config, "train")
    train = cached_pairs(model, train_photos, config, out / "cache", num_pairs=config.num_pairs,
                         seed=config.seed, full_maps=False, name="train", key=train_key, progress=progress,
                         echo=say)
    held_out = None
    if config.eval_pairs > 0:
        eval_key = _fingerprint(model, eval_photos, config, "eval")
        held_out = cached_pairs(model, eval_photos, config, out / "cache", num_pairs=config.eval_pairs,
                                seed=config.seed + 1_000_003, full_maps=True, name="eval", key=eval_key,
                                progress=progress, echo=say)
    say(f"pairs ready: {len(train)} train, {len(held_out) if held_out else 0} held-out "
        f"({time.time() - t_start:.0f} s)")

    results: dict[str, Any] = {}
    if held_out is not None:
        results["identity"] = evaluate_alignment(_identity_copy(model), held_out).summary()
        say("held-out, identity TransformNet: " + json.dumps({k: round(v, 4) for k, v in results["identity"].items()}))

    net = model.transform_net
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    step = 0
    history: list[dict[str, float]] = []
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        state = read_weights_file(ckpt_path)
        if state.get("kind") != CHECKPOINT_KIND or state.get("key") != train_key:
            raise ValueError(f"{ckpt_path} belongs to another run (other data, model or config); "
                             f"use a new output folder")
        if state.get("config") != config.to_dict():
            raise ValueError(f"{ckpt_path} was written with another pretrain config; use a new output folder")
        net.load_state_dict(state["transform_net"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        history = list(state.get("history", []))
        say(f"resumed from {ckpt_path} at step {step}/{total}")

    def save_state() -> None:
        atomic_torch_save(ckpt_path, {"kind": CHECKPOINT_KIND, "key": train_key, "config": config.to_dict(),
                                      "transform_net": net.state_dict(), "optimizer": optimizer.state_dict(),
                                      "step": step, "history": history})

    half = model.config.anchor_size / 2.0
    net.train()
    running = None
    t_train = time.time()
    with tqdm(total=total, initial=step, desc="pretrain", unit="step", disable=not progress) as bar:
        while step < total:
            epoch, i = divmod(step, steps_per_epoch)
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            set_lr(optimizer, lr_at(step, total, config))
            loss = batch_loss(model, train, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            rms_px = math.sqrt(float(loss.detach())) * half
            running = rms_px if running is None else 0.95 * running + 0.05 * rms_px
            bar.update(1)
            bar.set_postfix(rms_px=f"{running:.1f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch or step % config.checkpoint_every == 0:
                entry: dict[str, float] = {"step": step, "epoch": step / steps_per_epoch, "train_rms_px": running}
                if end_of_epoch and held_out is not None:
                    m = evaluate_alignment(model, held_out).summary()
                    net.train()
                    entry.update({"eval_" + k: v for k, v in m.items()})
                    say(f"epoch {step // steps_per_epoch}/{config.epochs}: train rms {running:.1f} px, held-out "
                        f"grid err {m['grid_err_px_mean']:.1f} px, box IoU {m['box_iou_mean']:.3f}")
                history.append(entry)
                save_state()
                if not progress and not end_of_epoch:
                    say(f"step {step}/{total}: train rms {running:.1f} px, lr {optimizer.param_groups[0]['lr']:.1e}, "
                        f"{time.time() - t_train:.0f} s")
    net.eval()
    train_seconds = time.time() - t_train

    info = {"steps": step, "pairs": len(train), "train_photos": len(train_photos), "config": config.to_dict(),
            "train_seconds_this_session": round(train_seconds, 1)}
    if held_out is not None:
        results["pretrained"] = evaluate_alignment(model, held_out).summary()
        info["heldout"] = {"identity": results["identity"], "pretrained": results["pretrained"]}
        table = format_table({"identity": results["identity"], "pretrained": results["pretrained"]})
        say(f"held-out ({len(held_out)} warps of {len(eval_photos)} photos), mean grid error: identity "
            f"{results['identity']['grid_err_px_mean']:.1f} px, pretrained {results['pretrained']['grid_err_px_mean']:.1f} px")
        results["table"] = table
    save_transform_net(out / "transform_net.pt", model, info)
    save_checkpoint(out / "model.pt", model, pretrain=info)
    summary = {**results, "steps": step, "history": history, "train_pairs": len(train),
               "eval_pairs": len(held_out) if held_out else 0, "seconds": round(time.time() - t_start, 1)}
    atomic_json_dump(out / "eval.json", summary)
    return summary
