"""Load test of ``os2d serve``: N concurrent clients each sending M detect requests.

Starts ``os2d serve`` in a subprocess on 127.0.0.1 (a free port, a temporary data dir), registers one
class, then for each client count runs the clients as threads with httpx and prints a table::

    python benchmarks/load_test.py --clients 10 50 --requests 4

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
from PIL import Image

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--requests", type=int, default=4, help="detect requests per client")
    ap.add_argument("--queue", type=int, default=64, help="server --workers-queue")
    ap.add_argument("--timeout", type=float, default=300.0, help="server --timeout")
    ap.add_argument("--threads", type=int, default=None, help="server --threads (torch threads)")
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
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    head = f"{'clients':>7} {'requests':>8} {'ok':>5} {'errors':>6} {'503':>5} {'p50 s':>7} {'p95 s':>7} " \
           f"{'max s':>7} {'req/s':>6} {'wall s':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['ok']:>5} {r['errors']:>6} {r['busy_503']:>5} "
              f"{r['p50']:>7.3f} {r['p95']:>7.3f} {r['max']:>7.3f} {r['throughput']:>6.2f} {r['wall']:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
