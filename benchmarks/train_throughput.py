"""Training throughput on this machine: patches per second of one full training iteration.

The paper's batch: B = 4 patches of 600 x 600 and K = 15 class images (240^2 area). An iteration is what
:class:`os2d.train.trainer.Trainer` does per step: class kernels, heads on the patches (train mode), the
objective (RLL with target remapping), backward, grad-norm clip and an SGD step. Batch building by the
:class:`~os2d.train.sampler.PatchSampler` (random crop/scale of a 1600 x 1200 scene, class images) is
timed apart, on generated scenes. Prints the median over ``--iters`` iterations after one warm-up, in wall
seconds and in CPU seconds of the process (on a shared machine the wall time grows with the load, the CPU
time much less).

    python benchmarks/train_throughput.py --backbones efficientnet_lite0 resnet50 --iters 3

``--amp none bf16`` times each iteration in every autocast mode on the same batches and weights (the update
uses the float32 gradient, so both arms see the same model) and prints the gradients' cosine against float32.
``--freeze-backbone --train-last N`` is the default model's CPU recipe (only the last N backbone blocks and the
TransformNet trained); the *frozen trunk s* column is the forward of the frozen part alone (patches and class
images, no autograd): what a cache of the frozen trunk's outputs could save per iteration at most.

    python benchmarks/train_throughput.py --backbones efficientnet_lite0 --batch-size 2 --patch-size 560 \
        --classes 6 --freeze-backbone --train-last 5 --amp none bf16 --iters 5 --threads 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from os2d.runtime import tune_allocator

tune_allocator()  # as `os2d train` does, before torch is imported: OS2D_ALLOCATOR picks (os2d.runtime)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def generated_dataset(folder: Path, classes: int, images: int = 4):
    """Scenes of 1600 x 1200 with six 240 x 300 products each, and the products as class images."""
    from PIL import Image

    from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord

    rng = np.random.default_rng(0)
    class_recs, objects = [], []
    for c in range(classes):
        obj = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).resize((240, 300), Image.NEAREST)
        obj.save(folder / f"class_{c}.png")
        objects.append(obj)
        class_recs.append(ClassRecord(str(c), f"c{c}", [folder / f"class_{c}.png"]))
    recs = []
    for i in range(images):
        scene = Image.fromarray(rng.integers(90, 160, (1200, 1600, 3), dtype=np.uint8))
        boxes, labels = [], []
        for j in range(6):
            c = int(rng.integers(classes))
            x, y = 40 + (j % 3) * 520, 60 + (j // 3) * 560
            scene.paste(objects[c], (x, y))
            boxes.append([x, y, x + 240, y + 300])
            labels.append(c)
        scene.save(folder / f"scene_{i}.jpg")
        recs.append(ImageRecord(f"scene_{i}", folder / f"scene_{i}.jpg", 1600, 1200, np.array(boxes, np.float32),
                                np.array(labels), np.zeros(len(labels), bool)))
    return DetectionDataset("generated", recs, class_recs)


def frozen_prefix_seconds(model, images: torch.Tensor, class_images: list[torch.Tensor], train_last: int) -> float:
    """Seconds of the frozen part of the trunk on a batch (no autograd): the input until the first trainable
    block starts, for the patches and each class image; the whole backbone when ``train_last`` is 0."""
    blocks = model.backbone.blocks() if train_last else []
    first = blocks[-train_last] if train_last else None

    class Reached(Exception):
        pass

    def stop(module, args):
        raise Reached

    handle = first.register_forward_pre_hook(stop) if first is not None else None
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            for x, align in [(images, True)] + [(im[None], False) for im in class_images]:
                try:
                    model.extract_features(x, align_to_anchors=align)
                except Reached:
                    pass
    finally:
        if handle is not None:
            handle.remove()
    return time.perf_counter() - t0


@dataclass
class Setup:
    """What one timed training iteration needs: the model and its trainable part, the objective, batches."""

    model: Any
    net: Any  # KernelsAndHeads
    params: list
    optimizer: Any
    objective: Any
    next_batch: Callable[[int], Any]  # iteration -> TrainBatch
    train_last: int  # trainable last backbone blocks (0: none, or all when the backbone is not frozen)
    frozen_backbone: bool


def generated_setup(folder: Path, backbone: str, variant: str, batch_size: int, patch_size: int, classes: int,
                    freeze_backbone: bool, train_last: int, weights: str | None) -> Setup:
    """A model (random, or ``weights``) with the paper's SGD, on scenes of :func:`generated_dataset`."""
    from os2d.config import ModelConfig
    from os2d.model.os2d import build_os2d
    from os2d.train.config import FreezeConfig, OptimConfig
    from os2d.train.losses import LossConfig, Os2dObjective
    from os2d.train.optim import apply_freeze, build_optimizer
    from os2d.train.sampler import PatchSampler, SamplerConfig
    from os2d.train.trainer import KernelsAndHeads

    config = ModelConfig.v2(backbone) if variant == "v2" else ModelConfig.v1(backbone)
    torch.manual_seed(0)
    model = build_os2d(config, pretrained_backbone=False)
    if weights is not None:
        from os2d.weights import load_model

        model = load_model(weights, expect=config)
    params = apply_freeze(model, FreezeConfig(backbone=freeze_backbone, backbone_train_last=train_last))
    folder.mkdir(parents=True, exist_ok=True)
    dataset = generated_dataset(folder, classes)
    sampler = PatchSampler(dataset, SamplerConfig(patch_size=patch_size, batch_size=batch_size,
                                                  class_batch_size=classes), image_size=1000, cache_images=True)
    rng = np.random.default_rng(0)
    return Setup(model, KernelsAndHeads(model).train(), params, build_optimizer(params, OptimConfig()),
                 Os2dObjective(LossConfig(loc_weight=0.2 if variant == "v1" else 0.0)),
                 lambda it: sampler.sample([it % len(dataset.images)] * batch_size, rng), train_last, freeze_backbone)


def recipe_setup(config_file: str, overrides: list[str], folder: Path) -> Setup:
    """A real run's first iterations: the :class:`~os2d.train.trainer.Trainer` of a training config (its data,
    model, freezing, optimiser and loss), with its output directory in ``folder``."""
    from os2d.train.config import load_train_config
    from os2d.train.trainer import Trainer

    cfg = load_train_config(config_file, [*overrides, f"output_dir={folder / 'run'}", "amp=none",
                                                   "transform_grad=dense"])
    trainer = Trainer(cfg, progress=False)
    trainer.net.train()
    return Setup(trainer.model, trainer.net, trainer.params, trainer.optimizer, trainer.objective,
                 lambda it: trainer.batches[it + 1], cfg.freeze.backbone_train_last, cfg.freeze.backbone)


def measure(setup: Setup, iters: int, amps: tuple[str, ...] = ("none",),
            transform_grads: tuple[str, ...] = ("dense",)) -> dict[str, dict]:
    """Median timings per arm (autocast mode x TransformNet gradient, named ``amp/transform_grad``) on the same
    batches and weights; the first arm is the reference of the gradient cosine and gives the update."""
    import contextlib
    import itertools

    from os2d.train.trainer import _float_output, transform_grad_selector

    dtypes = {"none": None, "bf16": torch.bfloat16}

    arms = {f"{a}/{g}": (dtypes[a], g) for a, g in itertools.product(amps, transform_grads)}
    amps = tuple(arms)
    times: dict[str, dict[str, list[float]]] = {a: {k: [] for k in ("step", "fwd", "cpu", "cos")} for a in amps}
    data_times, frozen_times = [], []
    for it in range(iters + 1):
        t0 = time.perf_counter()
        batch = setup.next_batch(it)
        data_s = time.perf_counter() - t0
        frozen_s = (frozen_prefix_seconds(setup.model, batch.images, batch.class_images, setup.train_last)
                    if setup.frozen_backbone else 0.0)
        grads = {}
        for amp in amps:
            t1, c1 = time.perf_counter(), time.process_time()
            setup.optimizer.zero_grad(set_to_none=False)
            dtype, transform_grad = arms[amp]
            autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with autocast:
                out = setup.net(batch.images, batch.class_images,
                                transform_grad_selector(setup.model, setup.objective, batch)
                                if transform_grad == "positives" else None)
            terms = setup.objective(_float_output(out), batch)
            t2 = time.perf_counter()
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(setup.params, 100.0)
            t3, c3 = time.perf_counter(), time.process_time()
            grads[amp] = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                                    for p in setup.params]).double()
            if it > 0:  # the first iteration warms up the allocator and oneDNN
                times[amp]["step"].append(t3 - t1)
                times[amp]["fwd"].append(t2 - t1)
                times[amp]["cpu"].append(c3 - c1)
                a, b = grads[amp], grads[amps[0]]
                if a.norm() > 0 and b.norm() > 0:  # no active term: no gradient to compare
                    times[amp]["cos"].append(float(a @ b / (a.norm() * b.norm())))
            print(f"  {amp} iter {it}: data {data_s:.2f} s, forward+loss {t2 - t1:.2f} s, backward {t3 - t2:.2f} s, "
                  f"CPU {c3 - c1:.1f} s, K={batch.num_classes}, loss {float(terms['loss']):.4f}", file=sys.stderr)
        offset = 0  # one update with the first mode's gradient: every mode sees the same weights next time
        for p in setup.params:
            p.grad = grads[amps[0]][offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        setup.optimizer.step()
        if it > 0:
            data_times.append(data_s)
            frozen_times.append(frozen_s)
    data, frozen = statistics.median(data_times), statistics.median(frozen_times)
    results = {}
    for amp in amps:
        step = statistics.median(times[amp]["step"])
        cos = times[amp]["cos"]
        results[amp] = {"step_s": step, "forward_s": statistics.median(times[amp]["fwd"]), "data_s": data,
                        "cpu_s": statistics.median(times[amp]["cpu"]), "frozen_s": frozen,
                        "grad_cos": min(cos) if cos else math.nan, "batch_size": len(batch.boxes),
                        "classes": batch.num_classes}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--variant", default="v2", choices=["v1", "v2"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=600)
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--freeze-backbone", action="store_true", help="train the TransformNet only")
    ap.add_argument("--train-last", type=int, default=0,
                    help="with --freeze-backbone: keep the last N backbone blocks trainable (freeze.backbone_train_last)")
    ap.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16"],
                    help="autocast modes to time on the same batches (CPU bf16 needs native bf16 to pay off)")
    ap.add_argument("--transform-grad", nargs="+", default=["dense"], choices=["dense", "positives"],
                    help="TransformNet's backward at every location or only where the loss reaches it")
    ap.add_argument("--weights", default=None, help="start from these weights (e.g. default; one backbone only)")
    ap.add_argument("--train-config", default=None,
                    help="time a real run instead: this training config (its data, model, freezing, loss)")
    ap.add_argument("overrides", nargs="*", help="with --train-config: dotted key=value overrides")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.train_config:
            setups = [(Path(args.train_config).name, recipe_setup(args.train_config, args.overrides, Path(tmp)))]
        else:
            setups = [(b, generated_setup(Path(tmp) / b, b, args.variant, args.batch_size, args.patch_size,
                                          args.classes, args.freeze_backbone, args.train_last, args.weights))
                      for b in args.backbones]
        for name, setup in setups:
            rows += [(name, amp, res) for amp, res in measure(setup, args.iters, tuple(args.amp),
                                                              tuple(args.transform_grad)).items()]
    r0, s0 = rows[0][2], setups[0][1]
    frozen = ((f", backbone frozen but its last {s0.train_last} blocks" if s0.train_last else ", backbone frozen")
              if s0.frozen_backbone else "")
    print(f"\ntraining iteration, batch {r0['batch_size']} patches, {r0['classes']} classes, "
          f"{torch.get_num_threads()} threads{frozen}, median of {args.iters}")
    print(f"{'model':<20} {'amp/TransformNet grad':<21} {'s/iter':>7} {'vs 1st':>7} {'fwd+loss s':>10} {'CPU s/iter':>10} "
          f"{'patches/s':>9} {'data s':>7} {'frozen trunk s':>14} {'grad cos':>8}")
    for name, amp, r in rows:
        base = next(x for b, a, x in rows if b == name)
        print(f"{name:<20} {amp:<21} {r['step_s']:>7.2f} {base['step_s'] / r['step_s']:>6.2f}x "
              f"{r['forward_s']:>10.2f} {r['cpu_s']:>10.1f} {r['batch_size'] / r['step_s']:>9.3f} {r['data_s']:>7.2f} "
              f"{r['frozen_s']:>14.2f} {r['grad_cos']:>8.4f}")


if __name__ == "__main__":
    main()
