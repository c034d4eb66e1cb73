"""A real ``os2d serve`` (uvicorn) in a subprocess on 127.0.0.1, for the tests that talk HTTP to it.

Only 127.0.0.1 is contacted, never through a proxy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env() -> dict[str, str]:
    """The environment of the server: unbuffered, no proxy, no token from the caller's environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "OS2D_TOKEN")}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def serve_command(data_dir: Path, *args: str, port: int | None = None, verbose: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "os2d"] + (["-v"] if verbose else []) + ["serve", "--host", "127.0.0.1"]
    return cmd + ["--port", str(port or free_port()), "--data-dir", str(data_dir), *args]


def get_json(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a request without a body (``{}`` when the body is not JSON)."""
    req = urllib.request.Request(url, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body or b"{}")
    except ValueError:
        return status, {}


class LiveServer:
    """``os2d serve`` started by :meth:`start`; its log goes to ``log_path``."""

    def __init__(self, data_dir: Path, *args: str, log_path: Path, verbose: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = serve_command(data_dir, *args, port=self.port, verbose=verbose)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_within: float = 90.0) -> LiveServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=serve_env())
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                status, body = get_json(self.base + "/api/v1/ready", timeout=2)
                if status == 200 and body.get("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become ready (rc={self.proc.poll()}); log:\n{self.log()[-4000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory so far (``VmHWM``), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
