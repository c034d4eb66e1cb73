"""Training throughput on this machine: patches per second of one full training iteration.

The paper's batch: B = 4 patches of 600 x 600 and K = 15 class images (240^2 area). An iteration is what
:class:`os2d.train.trainer.Trainer` does per step: class kernels, heads on the patches (train mode), the
objective (RLL with target remapping), backward, grad-norm clip and an SGD step. Batch building by the
:class:`~os2d.train.sampler.PatchSampler` (random crop/scale of a 1600 x 1200 scene, class images) is
timed apart, on generated scenes. Prints the median over ``--iters`` iterations after one warm-up, in wall
seconds and in CPU seconds of the process (on a shared machine the wall time grows with the load, the CPU
time much less).

    python benchmarks/train_throughput.py --backbones efficientnet_lite0 resnet50 --iters 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


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


def measure(backbone: str, variant: str, batch_size: int, patch_size: int, classes: int, iters: int,
            freeze_backbone: bool) -> dict[str, float]:
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
    params = apply_freeze(model, FreezeConfig(backbone=freeze_backbone))
    optimizer = build_optimizer(params, OptimConfig())
    objective = Os2dObjective(LossConfig(loc_weight=0.2 if variant == "v1" else 0.0))
    net = KernelsAndHeads(model).train()

    with tempfile.TemporaryDirectory() as tmp:
        dataset = generated_dataset(Path(tmp), classes)
        sampler = PatchSampler(dataset, SamplerConfig(patch_size=patch_size, batch_size=batch_size,
                                                      class_batch_size=classes), image_size=1000, cache_images=True)
        rng = np.random.default_rng(0)
        data_times, step_times, fwd_times, cpu_times = [], [], [], []
        for it in range(iters + 1):
            t0 = time.perf_counter()
            batch = sampler.sample([it % len(dataset.images)] * batch_size, rng)
            t1 = time.perf_counter()
            c1 = time.process_time()
            optimizer.zero_grad(set_to_none=True)
            out = net(batch.images, batch.class_images)
            terms = objective(out, batch)
            t2 = time.perf_counter()
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 100.0)
            optimizer.step()
            t3 = time.perf_counter()
            c3 = time.process_time()
            if it > 0:  # the first iteration warms up the allocator and oneDNN
                data_times.append(t1 - t0)
                fwd_times.append(t2 - t1)
                step_times.append(t3 - t1)
                cpu_times.append(c3 - c1)
            print(f"  {backbone} {variant} iter {it}: data {t1 - t0:.2f} s, forward+loss {t2 - t1:.2f} s, "
                  f"backward+step {t3 - t2:.2f} s, CPU {c3 - c1:.1f} s, K={batch.num_classes}", file=sys.stderr)
    step = statistics.median(step_times)
    data = statistics.median(data_times)
    return {"step_s": step, "forward_s": statistics.median(fwd_times), "data_s": data,
            "cpu_s": statistics.median(cpu_times),
            "patches_per_s": batch_size / step, "patches_per_s_with_data": batch_size / (step + data)}


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
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for backbone in args.backbones:
        r = measure(backbone, args.variant, args.batch_size, args.patch_size, args.classes, args.iters,
                    args.freeze_backbone)
        rows.append((backbone, r))
    print(f"\ntraining iteration, batch {args.batch_size} x {args.patch_size}^2, {args.classes} classes, "
          f"{args.variant}, {torch.get_num_threads()} threads{', backbone frozen' if args.freeze_backbone else ''}, "
          f"median of {args.iters}")
    print(f"{'backbone':<20} {'s/iter':>7} {'fwd+loss s':>10} {'CPU s/iter':>10} {'patches/s':>9} {'data s':>7} "
          f"{'patches/s incl. data':>21}")
    for backbone, r in rows:
        print(f"{backbone:<20} {r['step_s']:>7.2f} {r['forward_s']:>10.2f} {r['cpu_s']:>10.1f} "
              f"{r['patches_per_s']:>9.3f} {r['data_s']:>7.2f} {r['patches_per_s_with_data']:>21.3f}")


if __name__ == "__main__":
    main()
