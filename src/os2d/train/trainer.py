"""The training loop: batches -> model -> objective -> SGD step, with evaluation, checkpoints and exact resume.

One iteration (reference ``engine/train.py``): build this rank's batch (:mod:`os2d.train.data_order`), class
kernels from the batch's class images, head outputs on the patches (train mode), loss terms
(:class:`~os2d.train.losses.Os2dObjective`), backward, grad-norm clip, optimizer step, learning rate for the
next iteration. A non-finite loss or gradient skips the update with a warning (the reference does the same).
Every ``eval_every`` iterations (and before the first and after the last) the model is evaluated on the
validation data (:func:`os2d.evaluation.harness.evaluate_model`); the best one by ``eval.metric`` is kept as
``best.pt``. Every ``checkpoint_every`` iterations and at the end, a checkpoint with the whole training
state is written (:mod:`os2d.train.checkpoint`), and ``final.pt`` holds the last model.

Output directory::

    config.yaml            the resolved TrainConfig
    train_log.jsonl        every loss term of every iteration + every evaluation
    train_log.csv / eval_log.csv
    checkpoints/step_XXXXXXXX.pt   resumable (also loadable as a model)
    best.pt, final.pt      model files for os2d.weights.load_model / Detector.from_weights
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from os2d.config import ModelConfig
from os2d.data.records import DetectionDataset
from os2d.data.spec import DatasetSpec, dataset_image_size, load_dataset
from os2d.model.head import HeadOutput
from os2d.model.os2d import Os2dModel, build_os2d
from os2d.train import checkpoint as ckpt_io
from os2d.train.config import TrainConfig, save_train_config, train_config_to_dict
from os2d.train.data_order import DataOrder, StepBatches, mining_rng, no_collate
from os2d.train.distributed import (
    all_gather_objects,
    all_true,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from os2d.train.losses import Os2dObjective
from os2d.train.optim import apply_freeze, build_optimizer, lr_at, set_lr
from os2d.train.run_log import RunLog
from os2d.train.sampler import MinedPatch, PatchSampler, TrainBatch
from os2d.weights import WeightsError, load_model, load_strict, read_weights_file, save_checkpoint

logger = logging.getLogger(__name__)

TERM_ABBREVIATIONS = {"loss": "loss", "loss_rec_pos": "pos", "loss_rec_neg": "neg", "loss_loc": "loc"}


# ------------------------------------------------------------------------------------------------ building


def build_training_model(config: TrainConfig, *, with_init: bool = True) -> Os2dModel:
    """The model a run starts from: architecture ``config.model``, weights from ``config.init``.

    Random parts (TransformNet hidden layers) are drawn from a generator seeded with ``config.seed``, so every
    rank and every repetition builds the same model. ``with_init=False`` skips ``config.init`` (a resumed run
    takes every weight from its checkpoint, so init files need not exist any more).
    """
    init = config.init
    from_file = init.weights is not None or init.backbone_file is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_os2d(config.model, pretrained_backbone=with_init and init.pretrained_backbone and not from_file)
    if not with_init:
        return model
    if init.weights is not None:
        source = load_model(init.weights, expect=config.model)
        load_strict(model, source.state_dict(), f"init.weights {init.weights}")
    if init.backbone_file is not None:
        from os2d.weights.convert import init_backbone_from_file

        init_backbone_from_file(model, weights_file(init.backbone_file))
    if init.transform is not None:
        load_transform_init(model, weights_file(init.transform))
    return model


def load_transform_init(model: Os2dModel, path: Path) -> None:
    """TransformNet init from an ``os2d pretrain-transform`` file or a weakalign checkpoint (by content)."""
    from os2d.train.transform_file import TRANSFORM_KIND, load_transform_net

    obj = read_weights_file(path)
    if isinstance(obj, dict) and obj.get("kind") == TRANSFORM_KIND:
        load_transform_net(path, model)
    else:
        from os2d.weights.convert import init_transform_from_weakalign

        init_transform_from_weakalign(model, path)


def weights_file(name_or_path: str) -> Path:
    """A weights file given by path or by registry name (``resnet50-caffe2``, ``weakalign-resnet101`` ...)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    from os2d.weights import registry as weights_registry

    found = weights_registry.resolve(name_or_path)
    if found is None:
        raise WeightsError(weights_registry.missing_message(name_or_path))
    return found.path


class KernelsAndHeads(nn.Module):
    """One training forward as a module (what DistributedDataParallel wraps): class images -> kernels ->
    head outputs on the batch images."""

    def __init__(self, model: Os2dModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, class_images: list[Tensor],
                transform_grad_at: Callable[[Tensor], Tensor] | None = None) -> HeadOutput:
        kernels = self.model.class_kernels(class_images)  # (K, S*S, C)
        aspect = torch.tensor([im.shape[-1] / im.shape[-2] for im in class_images])  # (K,) w / h
        return self.model(images, kernels, aspect=aspect, transform_grad_at=transform_grad_at)


def transform_grad_selector(model: Os2dModel, objective: Os2dObjective, batch: TrainBatch
                            ) -> Callable[[Tensor], Tensor]:
    """The ``transform_grad_at`` of :func:`os2d.model.head.os2d_head` for one batch: from the boxes of the pass
    without autograd, the locations where ``objective`` back-propagates into TransformNet's output."""
    def select(boxes: Tensor) -> Tensor:  # (B, K, H, W, 4) -> (B, K, H, W) bool
        b, k, h, w, _ = boxes.shape
        probe = HeadOutput(scores=boxes.new_zeros(b, k, h, w), boxes_xyxy=boxes.float(),
                           corners_xy=boxes.new_zeros(b, k, h, w, 4, 2), scores_transform_detached=None,
                           stride=float(model.stride), anchor_size=model.config.anchor_size)
        return objective.transform_grad_locations(probe, batch).view(b, k, h, w)

    return select


def cpu_bf16_native() -> bool:
    """True when oneDNN runs bf16 convolutions and matrix products natively on this CPU (AVX512-BF16 or AMX).

    Elsewhere bf16 is emulated and slower than float32, so ``amp: bf16`` trains in float32 there.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _float_output(out: HeadOutput) -> HeadOutput:
    """Head outputs in float32 (the objective's IoUs and hinge sums stay exact under autocast)."""
    def f(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.float()
    return dataclasses.replace(out, scores=f(out.scores), boxes_xyxy=f(out.boxes_xyxy), corners_xy=f(out.corners_xy),
                               scores_transform_detached=f(out.scores_transform_detached))


def _load_data(spec: DatasetSpec | None) -> tuple[DetectionDataset, int] | None:
    if spec is None:
        return None
    dataset = load_dataset(spec)
    return dataset, dataset_image_size(spec, dataset)


@dataclass
class TrainSummary:
    """What :meth:`Trainer.fit` did."""

    output_dir: Path
    start_step: int
    steps: int  # iterations done in total (= max_iter at the end)
    skipped_steps: int  # updates skipped for a non-finite loss/gradient in this session
    final_model: Path | None
    best_model: Path | None
    best: dict[str, Any] | None
    last_terms: dict[str, float]
    seconds: float
    evaluations: list[dict[str, Any]]


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """Runs one training job described by a :class:`TrainConfig` (one process, or one rank under torchrun).

    Args:
        config: the run; ``config.output_dir`` receives logs, checkpoints and model files.
        resume: a checkpoint file, or a run directory (its newest checkpoint): continue that run exactly.
        progress: show a tqdm bar (rank 0) and evaluation progress.
    """

    def __init__(self, config: TrainConfig, *, resume: str | Path | None = None, progress: bool = True) -> None:
        if config.train_data is None:
            raise ValueError("train_data is required: a dataset spec (format, annotations, classes, ...)")
        if config.sampler.class_image_size != config.model.class_image_size:
            raise ValueError(f"sampler.class_image_size ({config.sampler.class_image_size}) must equal "
                             f"model.class_image_size ({config.model.class_image_size})")
        self.config = config
        self.progress = progress
        self.output_dir = Path(config.output_dir)
        self.ctx, self.device = setup_distributed(config.device)
        try:
            self._setup(resume)
        except BaseException:
            cleanup_distributed(self.ctx)
            raise

    # ------------------------------------------------------------------------------------------ setup

    def _setup(self, resume: str | Path | None) -> None:
        cfg, ctx = self.config, self.ctx
        resume_path = ckpt_io.resolve_resume(resume) if resume is not None else None
        if resume_path is None and ckpt_io.list_checkpoints(self.output_dir):  # every rank: none hangs
            raise ValueError(f"{self.output_dir} already holds checkpoints of a run: resume it (--resume "
                             f"{self.output_dir}) or choose another output directory")

        self.model = build_training_model(cfg, with_init=resume_path is None)
        self.params = apply_freeze(self.model, cfg.freeze)
        self.model.to(self.device)
        self.objective = Os2dObjective(cfg.loss).to(self.device)
        self.optimizer = build_optimizer(self.params, cfg.optim)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        train = _load_data(cfg.train_data)
        assert train is not None
        self.train_set, self.train_image_size = train
        if cfg.drop_empty_train_images:
            kept = [im.image_id for im in self.train_set.images if im.num_boxes]
            if len(kept) < len(self.train_set.images):
                logger.info("training on the %d of %d images with boxes (drop_empty_train_images)", len(kept),
                            len(self.train_set.images))
                if not kept:
                    raise ValueError(f"{self.train_set.name}: no training image has a box")
                self.train_set = self.train_set.subset(image_ids=kept, name=self.train_set.name)
        self.val = _load_data(cfg.val_data)
        self.sampler = PatchSampler(self.train_set, cfg.sampler, image_size=self.train_image_size,
                                    cache_images=cfg.cache_images)
        self.batches = StepBatches(self.sampler, DataOrder(self.sampler.num_images, cfg.seed), seed=cfg.seed,
                                   rank=ctx.rank, world_size=ctx.world_size)

        self.step = 0
        self.best: dict[str, Any] | None = None
        if resume_path is not None:
            self._restore(resume_path)

        self.net: nn.Module = KernelsAndHeads(self.model)
        if ctx.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_train_config(cfg, self.output_dir / "config.yaml")
            self.log: RunLog | None = RunLog(self.output_dir, resume_step=self.step if resume_path else None)
        else:
            self.log = None
        barrier(ctx)
        logger.info("training %s %s on %s: %d images, %d classes, %d trainable tensors, from step %d; amp %s, "
                    "TransformNet gradient %s", cfg.model.backbone, cfg.model.variant, self.device,
                    self.sampler.num_images, self.sampler.num_classes, len(self.params), self.step,
                    self.amp_dtype or "off", cfg.resolved_transform_grad())

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.config.amp
        if amp == "none":
            return None
        if self.device.type == "cuda":
            return torch.bfloat16 if amp == "bf16" else torch.float16
        if amp == "bf16" and self.device.type == "cpu" and cpu_bf16_native():
            return torch.bfloat16
        why = "a CPU with native bf16 (AVX512-BF16 or AMX)" if amp == "bf16" and self.device.type == "cpu" else "CUDA"
        logger.warning("amp=%s needs %s; training in float32 on %s", amp, why, self.device)
        return None

    def _restore(self, path: Path) -> None:
        state = ckpt_io.load_training_checkpoint(path)
        saved_model = ModelConfig.from_dict(state["config"])
        if saved_model != self.config.model:
            raise ValueError(f"{path}: the checkpoint's model config {saved_model} differs from the run's "
                             f"{self.config.model}")
        load_strict(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.best = state.get("best")
        self.batches.mined = [MinedPatch(**{**m, "crop_xyxy": tuple(m["crop_xyxy"])}) for m in state.get("mined", [])]
        rng = state["rng"]
        if len(rng) != self.ctx.world_size:
            logger.warning("%s was written by %d processes, this run has %d: global RNG states of rank 0 used "
                           "(batches do not depend on them)", path, len(rng), self.ctx.world_size)
        ckpt_io.restore_rng_state(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0])
        logger.info("resumed %s at step %d", path, self.step)

    # ------------------------------------------------------------------------------------------ loop

    def fit(self) -> TrainSummary:
        """Train up to ``max_iter`` iterations; returns a summary (rank 0 has the file paths)."""
        cfg, ctx = self.config, self.ctx
        start_step, t0 = self.step, time.perf_counter()
        skipped, last_terms, evaluations = 0, {}, []
        if start_step == 0 and cfg.eval.at_start:
            evaluations += self._evaluate(0)
        bar = self._progress_bar(start_step)
        try:
            while self.step < cfg.max_iter:
                self._maybe_mine(self.step + 1)
                for batch, data_s in self._batch_stream(self.step + 1, self._segment_end(self.step + 1)):
                    step = self.step + 1
                    t_step = time.perf_counter()
                    terms, grad_norm, lr, ok = self._train_step(batch, step)
                    self.step = step
                    skipped += not ok
                    step_s = time.perf_counter() - t_step + data_s
                    patches = len(batch.boxes) * ctx.world_size
                    last_terms = {**terms, "lr": lr, "grad_norm": grad_norm}
                    record = {"kind": "train", "step": step, "epoch": self.batches.position(step)["epoch"],
                              "time": round(time.perf_counter() - t0, 3), **terms, "lr": lr,
                              "grad_norm": grad_norm, "skipped": int(not ok), "num_classes": len(batch.class_ids),
                              "patches_per_s": patches / step_s if step_s > 0 else float("nan"),
                              "data_s": data_s, "step_s": step_s}
                    if self.log is not None:
                        self.log.write(record)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix({**{v: f"{terms[k]:.4f}" for k, v in TERM_ABBREVIATIONS.items() if k in terms},
                                         "p/s": f"{record['patches_per_s']:.2f}", "lr": f"{lr:.2g}"}, refresh=False)
                    if step % cfg.log_every == 0 and ctx.is_main:
                        logger.info("step %d/%d loss %.4f (pos %.4f neg %.4f loc %.4f) lr %.3g %.2f patches/s",
                                    step, cfg.max_iter, terms["loss"], terms.get("loss_rec_pos", math.nan),
                                    terms.get("loss_rec_neg", math.nan), terms.get("loss_loc", math.nan), lr,
                                    record["patches_per_s"])
                    last = step == cfg.max_iter
                    if last or (cfg.eval_every and step % cfg.eval_every == 0):
                        evaluations += self._evaluate(step)
                    if last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                        self._save_checkpoint(step)
        except KeyboardInterrupt:
            if not ctx.enabled and self.step > start_step:
                logger.warning("interrupted: saving a checkpoint at step %d", self.step)
                self._save_checkpoint(self.step)
            raise
        finally:
            if bar is not None:
                bar.close()
        final = best = None
        if ctx.is_main:
            final = self.output_dir / ckpt_io.FINAL_MODEL
            save_checkpoint(final, self.model, step=self.step, train_config=train_config_to_dict(cfg))
            best_path = self.output_dir / ckpt_io.BEST_MODEL
            best = best_path if best_path.is_file() else None
        barrier(ctx)
        return TrainSummary(output_dir=self.output_dir, start_step=start_step, steps=self.step, skipped_steps=skipped,
                            final_model=final, best_model=best, best=self.best, last_terms=last_terms,
                            seconds=time.perf_counter() - t0, evaluations=evaluations)

    def close(self) -> None:
        """Leave the process group (torchrun)."""
        cleanup_distributed(self.ctx)

    def _progress_bar(self, start_step: int):
        if not (self.progress and self.ctx.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.max_iter, initial=start_step, desc="train", unit="it", file=sys.stderr,
                    dynamic_ncols=True)

    def _segment_end(self, first_step: int) -> int:
        """Last iteration before the next mining round (or max_iter): batches of a segment share a pool."""
        m = self.config.mining
        end = self.config.max_iter
        if m.enabled:
            next_round = ((first_step - 1) // m.every + 1) * m.every + 1
            end = min(end, next_round - 1)
        return end

    def _batch_stream(self, first: int, last: int) -> Iterator[tuple[TrainBatch, float]]:
        """(batch, seconds waited for it) of iterations first..last (DataLoader workers if num_workers > 0)."""
        steps = range(first, last + 1)
        if self.config.num_workers == 0:
            source: Iterator[TrainBatch] = (self.batches[s] for s in steps)
        else:
            loader = torch.utils.data.DataLoader(
                self.batches, batch_size=None, sampler=steps, num_workers=self.config.num_workers,
                collate_fn=no_collate, pin_memory=self.device.type == "cuda", prefetch_factor=2)
            source = iter(loader)
        while True:
            t = time.perf_counter()
            try:
                batch = next(source)
            except StopIteration:
                return
            yield batch, time.perf_counter() - t

    def _train_step(self, batch: TrainBatch, step: int) -> tuple[dict[str, float], float, float, bool]:
        """One update; returns (loss terms, gradient norm, lr used, whether the update was applied)."""
        cfg, ctx = self.config, self.ctx
        lr = lr_at(step - 1, cfg.optim, cfg.schedule, cfg.max_iter)
        set_lr(self.optimizer, lr)
        batch = batch.to(self.device)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast(device_type=self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                    else contextlib.nullcontext())
        with autocast:
            out = self.net(batch.images, batch.class_images, self._transform_grad_at(batch))
        terms_t = self.objective(_float_output(out), batch)
        loss = terms_t["loss"]
        terms = {k: float(v.detach()) for k, v in terms_t.items()}
        usable = all_true(ctx, bool(torch.isfinite(loss)) and loss.requires_grad, self.device)
        if not usable:
            logger.warning("step %d: loss %s (%s); update skipped", step, terms["loss"],
                           "not finite" if loss.requires_grad else "no gradient")
            if ctx.enabled and loss.requires_grad:  # every rank must join the gradient all-reduce
                (loss.nan_to_num(0.0) * 0.0).backward()
            self.optimizer.zero_grad(set_to_none=True)
            return terms, math.nan, lr, False
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if self.scaler is not None:  # the scaler skips steps with inf/NaN gradients itself and lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return terms, grad_norm, lr, math.isfinite(grad_norm)
        if not math.isfinite(grad_norm):
            logger.warning("step %d: gradient norm %s; update skipped", step, grad_norm)
            self.optimizer.zero_grad(set_to_none=True)
            return terms, grad_norm, lr, False
        self.optimizer.step()
        return terms, grad_norm, lr, True

    def _transform_grad_at(self, batch: TrainBatch) -> Callable[[Tensor], Tensor] | None:
        """With ``transform_grad`` resolved to positives, the head's selector of where TransformNet needs autograd."""
        if self.config.resolved_transform_grad() == "dense":
            return None
        return transform_grad_selector(self.model, self.objective, batch)

    # ------------------------------------------------------------------------------------------ mining

    def _maybe_mine(self, step: int) -> None:
        """Hard patch mining before iterations 1, 1 + every, 1 + 2 every, ... (reference: iteration 0, 5000...)."""
        m = self.config.mining
        if not m.enabled or (step - 1) % m.every != 0:
            return
        from os2d.train.mining import mine_hard_patches

        ctx = self.ctx
        indices = list(range(ctx.rank, self.sampler.num_images, ctx.world_size))
        self.model.eval()
        pool = mine_hard_patches(self.model, self.objective, self.train_set, self.config.sampler, m,
                                 image_size=self.train_image_size, rng=mining_rng(self.config.seed, ctx.rank, step),
                                 device=self.device, image_indices=indices, progress=self.progress and ctx.is_main)
        merged = [p for part in all_gather_objects(ctx, list(pool)) for p in part]
        self.batches.mined = merged
        logger.info("step %d: mined %d hard patches", step, len(merged))

    # ------------------------------------------------------------------------------------------ eval

    def _evaluate(self, step: int) -> list[dict[str, Any]]:
        """Evaluate (rank 0) on the validation data and the first ``eval.train_images`` training images."""
        cfg, records = self.config, []
        if self.ctx.is_main:
            jobs: list[tuple[str, DetectionDataset, int, int | None]] = []
            if self.val is not None:
                jobs.append(("val", self.val[0], self.val[1], cfg.eval.max_images))
            if cfg.eval.train_images:
                jobs.append(("train", self.train_set, self.train_image_size, cfg.eval.train_images))
            for split, dataset, image_size, max_images in jobs:
                metrics = self._evaluate_split(dataset, image_size, max_images)
                record = {"kind": "eval", "split": split, "step": step, **metrics}
                records.append(record)
                assert self.log is not None
                self.log.write(record)
                logger.info("step %d %s: %s", step, split, ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
                if split == "val":
                    self._update_best(step, metrics)
        barrier(self.ctx)
        return records

    def _evaluate_split(self, dataset: DetectionDataset, image_size: int, max_images: int | None) -> dict[str, Any]:
        from os2d.evaluation.harness import evaluate_model

        inference = self.config.eval.inference
        if inference.image_size is None:  # null: the dataset's own scale (objects ~ class-image size)
            inference = inference.replace(image_size=image_size)
        self.model.eval()
        try:
            ev = evaluate_model(self.model, dataset, inference, device=self.device, progress=self.progress,
                                max_images=max_images)
        finally:
            self.model.train()
        result = ev.result.to_dict()
        metrics = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
        metrics["seconds_per_image"] = ev.seconds_per_image
        if self.config.eval.per_class:  # a dict: in the JSONL log and the summary, not in eval_log.csv
            t = f"{ev.result.iou_threshold:.2f}"
            metrics["ap_per_class"] = {name: row[f"AP@{t}"] for name, row in result["per_class"].items()}
        return metrics

    def _update_best(self, step: int, metrics: dict[str, Any]) -> None:
        name = self.config.eval.metric
        if name not in metrics:
            raise ValueError(f"eval.metric {name!r} is not among the evaluation metrics {sorted(metrics)}")
        value = metrics[name]
        if value is None or not math.isfinite(value):
            return
        if self.best is None or value > self.best["value"]:
            self.best = {"metric": name, "value": float(value), "step": step}
            save_checkpoint(self.output_dir / ckpt_io.BEST_MODEL, self.model, step=step, best=self.best,
                            train_config=train_config_to_dict(self.config))
            logger.info("step %d: new best %s %.4f -> %s", step, name, value, self.output_dir / ckpt_io.BEST_MODEL)

    # ------------------------------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, step: int) -> None:
        rng = all_gather_objects(self.ctx, ckpt_io.capture_rng_state())
        if self.ctx.is_main:
            path = ckpt_io.checkpoint_path(self.output_dir, step)
            ckpt_io.save_training_checkpoint(
                path, self.model, train_config=train_config_to_dict(self.config), step=step,
                optimizer=self.optimizer.state_dict(),
                scheduler={"kind": self.config.schedule.kind, "lr": self.optimizer.param_groups[0]["lr"]},
                grad_scaler=self.scaler.state_dict() if self.scaler is not None else None,
                rng=rng, sampler=self.batches.position(step), best=self.best, world_size=self.ctx.world_size,
                mined=[dataclasses.asdict(m) for m in self.batches.mined])
            ckpt_io.prune_checkpoints(self.output_dir, self.config.keep_checkpoints)
            logger.info("step %d: checkpoint %s", step, path)
        barrier(self.ctx)


def train(config: TrainConfig, *, resume: str | Path | None = None, progress: bool = True) -> TrainSummary:
    """Run (or resume) a training job; leaves the process group at the end."""
    trainer = Trainer(config, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        trainer.close()


__all__ = ["KernelsAndHeads", "TrainSummary", "Trainer", "build_training_model", "cpu_bf16_native", "train", "transform_grad_selector"]
