"""Images/s of ``os2d detect`` over a folder, with and without background decoding, and peak memory.

Each (mode, repeat) runs in its own subprocess (so peak RSS is per mode), modes interleaved within a repeat (so
a busy machine slows them alike). A run = the JSONL runner (decode + resize + detect + write one line per image)
over the whole folder after one warm-up image. Prints the median images/s over repeats, the ratio to the
baseline (decoding in the main thread), peak resident memory and the peak Python heap (tracemalloc, a separate
pass: tracing slows the run).

    python benchmarks/folder.py --images 24 --size 1600x1200 --image-size 768 --classes 2 --repeats 3
    python benchmarks/folder.py --folder ../shared/data/flickrlogos27-dev/images --images 40
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MODES = {"main thread": (0, 1), "1 thread": (1, 2), "2 threads": (2, 4)}  # name -> (workers, depth)


def make_photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like picture (smooth shading, texture, shapes): decodes like a camera JPEG of that size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (50 + 30 * c) + yy / (70 + 20 * c) + seed) for c in range(3)], -1)
    noise = rng.normal(0, 18, (height, width, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(30):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(20, max(21, width // 6)))
        d.rectangle([x, y, x + s, y + s // 2], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def make_folder(root: Path, n: int, width: int, height: int) -> list[str]:
    paths = []
    for i in range(n):
        p = root / f"photo{i:04d}.jpg"
        make_photo(width, height, i).save(p, quality=90)
        paths.append(str(p))
    return paths


def run_one(args: argparse.Namespace) -> dict:
    """One mode, one pass (in a subprocess)."""
    import torch

    from os2d.detector import Detector
    from os2d.io import load_image
    from os2d.runner import discover_images, run_to_jsonl

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    workers, depth = MODES[args.one]
    paths = discover_images([args.folder])[: args.images]
    det = Detector.from_weights(args.weights, device=args.device, image_size=args.image_size or None)
    for i in range(args.classes):
        img = load_image(paths[i % len(paths)])
        w, h = img.size
        det.add_class(f"c{i}", img.crop((w // 4, h // 4, w // 4 + w // 5, h // 4 + h // 5)))
    with tempfile.TemporaryDirectory() as tmp:
        run_to_jsonl(det, paths[:1], Path(tmp) / "warm.jsonl", workers=workers, depth=depth)
        t0 = time.perf_counter()
        summary = run_to_jsonl(det, paths, Path(tmp) / "out.jsonl", workers=workers, depth=depth)
        seconds = time.perf_counter() - t0
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t_decode = []
        for p in paths[: min(8, len(paths))]:
            t1 = time.perf_counter()
            load_image(p)
            t_decode.append(time.perf_counter() - t1)
        heap_mb = float("nan")
        if args.heap:
            tracemalloc.start()
            run_to_jsonl(det, paths[: min(6, len(paths))], Path(tmp) / "heap.jsonl", workers=workers, depth=depth)
            heap_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else float("nan")
    return {"mode": args.one, "images": summary.processed, "seconds": seconds,
            "images_per_s": summary.processed / seconds, "decode_s": statistics.median(t_decode),
            "peak_rss_mb": peak_rss_mb, "heap_peak_mb": heap_mb, "gpu_peak_mb": gpu_mb,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=None, help="images to use (default: generate photos)")
    ap.add_argument("--images", type=int, default=24, help="number of images")
    ap.add_argument("--size", default="1600x1200", help="WxH of generated photos")
    ap.add_argument("--image-size", type=int, default=768, help="detector image_size (0 = keep size)")
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's choice)")
    ap.add_argument("--heap", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the peak Python heap (tracemalloc pass)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one mode, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            w, h = (int(v) for v in args.size.lower().split("x"))
            folder = Path(tmp)
            make_folder(folder, args.images, w, h)
        rows: dict[str, list[dict]] = {m: [] for m in MODES}
        for r in range(args.repeats):
            for mode in MODES:
                cmd = [sys.executable, __file__, "--one", mode, "--folder", str(folder), "--images", str(args.images),
                       "--image-size", str(args.image_size), "--classes", str(args.classes), "--weights", args.weights,
                       "--device", args.device, "--threads", str(args.threads),
                       "--heap" if args.heap and r == 0 else "--no-heap"]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows[mode].append(json.loads(out.strip().splitlines()[-1]))
    first = rows["main thread"][0]
    src = str(args.folder) if args.folder else f"{args.images} generated {args.size} JPEGs"
    print(f"machine: {platform.processor() or platform.machine()}, device {args.device}, {first['threads']} torch "
          f"threads; {src}, image_size {args.image_size}, {args.classes} classes, weights {args.weights}; "
          f"median of {args.repeats} runs")
    print(f"decode alone (load_image): {first['decode_s'] * 1000:.0f} ms/image (median)")
    hdr = (f"{'decoding':<14}{'images':>7}{'images/s':>10}{'ratio':>7}{'peak RSS MB':>13}{'heap peak MB':>14}"
           + (f"{'GPU peak MB':>13}" if args.device.startswith("cuda") else ""))
    print(hdr)
    print("-" * len(hdr))
    base = statistics.median(x["images_per_s"] for x in rows["main thread"])
    for mode, runs in rows.items():
        ips = statistics.median(x["images_per_s"] for x in runs)
        rss = max(x["peak_rss_mb"] for x in runs)
        heap = runs[0]["heap_peak_mb"]
        line = f"{mode:<14}{runs[0]['images']:>7}{ips:>10.2f}{ips / base:>6.2f}x{rss:>13.0f}{heap:>14.1f}"
        if args.device.startswith("cuda"):
            line += f"{max(x['gpu_peak_mb'] for x in runs):>13.0f}"
        print(line)


if __name__ == "__main__":
    main()
