"""Memory allocator settings (``os2d.runtime``, ``OS2D_ALLOCATOR``): seconds per image, peak memory, same results.

Each arm runs in its own process (the settings are process-wide and PyTorch reads ``THP_MEM_ALLOC_ENABLE`` at import):
``system`` (glibc and PyTorch as they come), ``thp``, ``heap`` and ``heap+thp`` (the default). A worker builds the
default detector with the set's classes, detects one warm-up image, then every image of the set (``--every``) and
reports the mean seconds per image at default settings, the process's peak resident memory and a digest of every
detection (labels, scores, boxes). The arms run round-robin, ``--rounds`` times (the VM's slow phases hit all arms
alike); the table gives the median over rounds and the ratio to ``system``, and says whether every arm's detections
are identical to ``system``'s (bit for bit: the allocator does not change the arithmetic).

Then, in this process with the default setting: the backbone alone on a 1312 x 1797 level (an FL27 photo at the
automatic scale's 1536 level) and the second look's batch of 16 crops of 240^2, median of 5.

    python benchmarks/allocator.py --set fl27-val --every 30 --rounds 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from os2d.runtime import MODES, tune_allocator


def worker(args: argparse.Namespace) -> None:
    tune_allocator()  # before torch is imported (below)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cascade_probe import load_set

    from os2d.detector import Detector
    from os2d.evaluation.harness import _class_names, _load_class_images
    from os2d.io import load_image

    dataset = load_set(args.set, args.synth_dir)
    det = Detector.from_weights("default")
    for name, imgs in zip(_class_names(dataset), _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    images = [load_image(r.path) for r in dataset.images[:: args.every]]
    det.detect(images[0])
    digest, seconds = hashlib.sha256(), 0.0
    for im in images:
        t0 = time.perf_counter()
        d = det.detect(im)
        seconds += time.perf_counter() - t0
        for t in (d.labels, d.scores, d.boxes_xyxy):
            digest.update(t.contiguous().numpy().tobytes())
    print(json.dumps({"s_per_image": seconds / len(images), "images": len(images),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "digest": digest.hexdigest()[:16]}))


def backbone_table() -> None:
    import torch

    from os2d.detector import Detector

    model = Detector.from_weights("default").model.eval()
    rows = {"photo level 1312x1797": torch.rand(1, 3, 1312, 1797), "16 crops 240x240": torch.rand(16, 3, 240, 240)}
    print("| backbone input (this process, default setting) | s, median of 5 |")
    print("|---|---:|")
    with torch.no_grad():
        for name, x in rows.items():
            model.extract_features(x)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                model.extract_features(x)
                times.append(time.perf_counter() - t0)
            print(f"| {name} | {statistics.median(times):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="fl27-val", help="fl27-val | fl27-train | demo | synth-val")
    ap.add_argument("--every", type=int, default=30, help="every Nth image of the set")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arms", nargs="+", default=["system", "thp", "heap", "heap+thp"], choices=MODES)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    tune_allocator()  # this process: the default, for the backbone table at the end
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for r in range(args.rounds):
        for arm in args.arms:
            env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | {"OS2D_ALLOCATOR": arm}
            out = subprocess.run([sys.executable, __file__, "--worker", "--set", args.set, "--every", str(args.every),
                                  "--synth-dir", str(args.synth_dir)], env=env, check=True, capture_output=True,
                                 text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            results[arm].append(res)
            print(f"round {r + 1} {arm}: {res['s_per_image']:.3f} s/image, peak {res['peak_mb']:.0f} MB", flush=True)
    base = statistics.median(x["s_per_image"] for x in results[args.arms[0]])
    ref = results[args.arms[0]][0]["digest"]
    n = results[args.arms[0]][0]["images"]
    print(f"\n{args.set}, every {args.every}th image ({n}), default settings, median of {args.rounds} rounds")
    print(f"| allocator | s / image | vs {args.arms[0]} | peak MB | detections identical |")
    print("|---|---:|---:|---:|---|")
    for arm, rs in results.items():
        s = statistics.median(x["s_per_image"] for x in rs)
        same = all(x["digest"] == ref for x in rs)
        print(f"| {arm} | {s:.2f} | {base / s:.2f}x | {max(x['peak_mb'] for x in rs):.0f} | {'yes' if same else 'NO'} |")
    print()
    backbone_table()


if __name__ == "__main__":
    main()
