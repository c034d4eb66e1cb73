"""Load test of ``os2d serve``: N concurrent clients each sending M detect requests, and the server's memory
under concurrent batches of large images.

Starts ``os2d serve`` in a subprocess on 127.0.0.1 (a free port, a temporary data dir), registers one
class, then for each client count runs the clients as threads with httpx and prints a table::

    python benchmarks/load_test.py --clients 10 50 --requests 4

``--batch-clients 1 3`` adds a memory table: that many clients at once, each posting one ``/detect/batch``
of ``--batch-images`` flat ``--batch-size`` images (large but allowed), while the server's resident memory
is sampled from ``/proc/PID/status`` (``VmRSS`` every 50 ms, ``VmHWM`` = the kernel's peak)::

    python benchmarks/load_test.py --clients --batch-clients 1 3 --batch-images 16 --batch-size 5000x4000

Only 127.0.0.1 is contacted. ``errors`` counts every non-200 answer (503 = queue full / timeout).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
from PIL import Image, ImageDraw

from os2d.apps.demo.scene import make_class_images


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: str, queue: int, timeout: float, threads: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "os2d", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", data_dir, "--workers-queue", str(queue), "--timeout", str(timeout)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OS2D_TOKEN"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(base: str, proc: subprocess.Popen, limit: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/api/v1/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready")


def run_clients(base: str, image: bytes, clients: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    codes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600) as c:
            barrier.wait()
            for _ in range(requests):
                t0 = time.perf_counter()
                try:
                    code = c.post("/api/v1/detect", files={"image": ("scene.png", image, "image/png")}).status_code
                except httpx.HTTPError:
                    code = -1
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    codes.append(code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [lat for lat, code in zip(latencies, codes, strict=True) if code == 200]
    lat = sorted(latencies)
    return {
        "clients": clients, "requests": len(codes), "ok": len(ok), "errors": len(codes) - len(ok),
        "busy_503": codes.count(503),
        "p50": statistics.median(lat), "p95": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))],
        "max": lat[-1], "throughput": len(ok) / wall, "wall": wall,
    }


def flat_image(width: int, height: int, seed: int) -> bytes:
    """A flat picture with a few boxes: many pixels, a small PNG (a large image that uploads fast)."""
    img = Image.new("RGB", (width, height), (120 + seed, 110, 100))
    d = ImageDraw.Draw(img)
    for i in range(6):
        x, y = (i * 997 + seed * 131) % (width - 400), (i * 613 + seed * 71) % (height - 400)
        d.rectangle([x, y, x + 300, y + 360], fill=(20 * i, 255 - 30 * i, 40 + seed))
    return png(img)


def proc_status_mb(pid: int, field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of process ``pid`` in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak RSS (``VmHWM``) of ``pid``; False where not allowed (then only sampling counts)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_batches(base: str, pid: int, images: list[bytes], clients: int) -> dict[str, float]:
    """``clients`` concurrent ``/detect/batch`` requests of ``images``; the server's RSS before, and its peak."""
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)]
    codes: list[int] = []
    barrier = threading.Barrier(clients + 1)
    done = threading.Event()
    peak = [0.0]

    def client() -> None:
        with httpx.Client(base_url=base, timeout=3600) as c:
            barrier.wait()
            try:
                codes.append(c.post("/api/v1/detect/batch", files=files).status_code)
            except httpx.HTTPError:
                codes.append(-1)

    def sampler() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc_status_mb(pid, "VmRSS"))
            time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    before = proc_status_mb(pid, "VmRSS")
    hwm_reset = reset_peak(pid)
    watcher = threading.Thread(target=sampler)
    watcher.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done.set()
    watcher.join()
    if hwm_reset:
        peak[0] = max(peak[0], proc_status_mb(pid, "VmHWM"))
    return {"clients": clients, "images": len(images) * clients, "ok": codes.count(200),
            "busy_503": codes.count(503), "wall": wall, "rss_before": before, "rss_peak": peak[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="*", default=[10, 50])
    ap.add_argument("--requests", type=int, default=4, help="detect requests per client")
    ap.add_argument("--queue", type=int, default=64, help="server --workers-queue")
    ap.add_argument("--timeout", type=float, default=300.0, help="server --timeout")
    ap.add_argument("--threads", type=int, default=None, help="server --threads (torch threads)")
    ap.add_argument("--batch-clients", type=int, nargs="*", default=[], help="concurrent batch clients per row")
    ap.add_argument("--batch-images", type=int, default=16, help="images per batch request")
    ap.add_argument("--batch-size", default="5000x4000", help="WxH of each batch image")
    args = ap.parse_args()

    obj = next(iter(make_class_images().values()))  # a generated product of os2d's demo
    obj.thumbnail((200, 200))
    rng = np.random.default_rng(1)
    scene = Image.fromarray(rng.normal(128, 20, (480, 640, 3)).clip(0, 255).astype(np.uint8))
    for pos in [(100, 80), (400, 250)]:
        scene.paste(obj, pos)
    image = png(scene)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="os2d-load-") as data_dir:
        proc = start_server(port, data_dir, args.queue, args.timeout, args.threads)
        try:
            wait_ready(base, proc)
            r = httpx.post(f"{base}/api/v1/classes", data={"name": "product"},
                           files={"image": ("obj.png", png(obj), "image/png")}, timeout=60)
            r.raise_for_status()
            warm = httpx.post(f"{base}/api/v1/detect", files={"image": ("s.png", image, "image/png")}, timeout=60)
            warm.raise_for_status()
            top = warm.json()["detections"][0]
            print(f"server on {base}, queue {args.queue}; warm-up: top detection {top['label']} "
                  f"{top['score']:.3f} at {top['box_xyxy']}, {warm.json()['seconds']:.3f} s model time")
            rows = [run_clients(base, image, n, args.requests) for n in args.clients]
            width, height = (int(v) for v in args.batch_size.split("x"))
            large = [flat_image(width, height, i) for i in range(args.batch_images)] if args.batch_clients else []
            batch_rows = [run_batches(base, proc.pid, large, n) for n in args.batch_clients]
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if rows:
        head = f"{'clients':>7} {'requests':>8} {'ok':>5} {'errors':>6} {'503':>5} {'p50 s':>7} {'p95 s':>7} " \
               f"{'max s':>7} {'req/s':>6} {'wall s':>7}"
        print(head)
        print("-" * len(head))
        for r in rows:
            print(f"{r['clients']:>7} {r['requests']:>8} {r['ok']:>5} {r['errors']:>6} {r['busy_503']:>5} "
                  f"{r['p50']:>7.3f} {r['p95']:>7.3f} {r['max']:>7.3f} {r['throughput']:>6.2f} {r['wall']:>7.1f}")
    if batch_rows:
        mp = width * height / 1e6
        print(f"\nbatches of {args.batch_images} images of {width}x{height} ({mp:.0f} MP, "
              f"{mp * 3:.0f} MB decoded each), server RSS in MiB")
        head = f"{'clients':>7} {'images':>6} {'ok':>4} {'503':>4} {'wall s':>7} {'RSS before':>10} {'peak RSS':>9}"
        print(head)
        print("-" * len(head))
        for r in batch_rows:
            print(f"{r['clients']:>7} {r['images']:>6} {r['ok']:>4} {r['busy_503']:>4} {r['wall']:>7.1f} "
                  f"{r['rss_before']:>10.0f} {r['rss_peak']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
