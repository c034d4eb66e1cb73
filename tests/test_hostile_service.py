"""Hostile and careless input against a real ``os2d serve`` (uvicorn in a subprocess, 127.0.0.1 only).

Every case asserts an answer with ``detail`` (a 4xx, or one ``os2d: error:`` line and exit 2 at start-up) and
that nothing stored is lost. One server per module serves the request cases; the start-up and crash cases
start their own.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import png, scene_with, textured_object
from live_server import LiveServer, serve_command, serve_env
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

API = "/api/v1"
UPLOAD_MB = 1  # --max-upload-mb of the module's server
MAX_ADHOC_IMAGES = 8  # os2d.apps.service.service.MAX_ADHOC_IMAGES



def large_image(width: int, height: int, seed: int) -> bytes:
    """Objects on a flat background of width x height: many pixels, a small PNG."""
    img = Image.new("RGB", (width, height), (120 + seed, 110, 100))
    for i in range(4):
        img.paste(textured_object(seed=seed + i), ((i * 1231 + seed * 97) % (width - 100), (i * 887) % (height - 130)))
    return png(img)


def client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.base, timeout=120, trust_env=False)


def assert_error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail, r.text
    for w in words:
        assert w in detail, (w, detail)
    return detail


@pytest.fixture(scope="module")
def obj() -> Image.Image:
    return textured_object(seed=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, obj: Image.Image):
    tmp = tmp_path_factory.mktemp("hostile")
    srv = LiveServer(tmp / "data", "--max-upload-mb", str(UPLOAD_MB), log_path=tmp / "server.log").start()
    with client(srv) as c:
        assert c.post(f"{API}/classes", data={"name": "keeper"},
                      files={"image": ("k.png", png(obj), "image/png")}).status_code == 201
    try:
        yield srv
    finally:
        srv.stop()


def assert_nothing_lost(srv: LiveServer) -> None:
    with client(srv) as c:
        assert c.get(f"{API}/health").json() == {"status": "ok"}
        names = [x["name"] for x in c.get(f"{API}/classes").json()["classes"]]
        assert "keeper" in names, names
        assert c.get(f"{API}/classes/keeper/thumbnail").status_code == 200


# ------------------------------------------------------------------------------------ paths and names


def test_static_paths_never_500(server: LiveServer) -> None:
    with client(server) as c:
        assert c.get("/static/app.js").status_code == 200
        for path in ["/static/%00", "/static/a%00b.js", "/static/..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/app.py",
                     "/static/", "/static/" + "x" * 5000, "/static/app.js%00.png"]:
            assert_error(c.get(path), 404, "not found")
    assert_nothing_lost(server)


def test_dot_names_refused_and_no_name_aliases_a_url(server: LiveServer, obj: Image.Image) -> None:
    image = {"image": ("o.png", png(obj), "image/png")}
    with client(server) as c:
        for name in [".", "..", " .. ", "a/b", "a\\b", "a\x00b", "a\nb", "a,b", "x" * 101]:
            assert_error(c.post(f"{API}/classes", data={"name": name}, files=image), 400, "class name")
        tricky = ["a b", "50%", "a?b", "a#b", "ü ñ", "...", "%2e%2e", "a%2Fb", "+x", "~", "a;b=c", "&", ".x", "x."]
        for name in tricky:
            r = c.post(f"{API}/classes", data={"name": name}, files=image)
            assert r.status_code == 201, (name, r.text)
            rec = r.json()
            assert rec["name"] == name
            assert c.get(rec["thumbnail_url"]).status_code == 200, name
            url = rec["thumbnail_url"].removesuffix("/thumbnail")
            assert c.get(f"{url}/images/0").status_code == 200, name
        listed = [x["name"] for x in c.get(f"{API}/classes").json()["classes"]]
        assert listed == ["keeper", *tricky]
        # URL segments no class can have answer 404 (never another class, never a 500)
        for seg in ["%00", "%2e%2e", "%2E", "a%2Fb%2F..", "%20keeper", "keeper%20", "x" * 300]:
            assert_error(c.get(f"{API}/classes/{seg}/thumbnail"), 404)
            assert_error(c.delete(f"{API}/classes/{seg}"), 404)
        assert_error(c.get(f"{API}/classes/keeper/images/abc"), 400, "index")
        assert_error(c.get(f"{API}/classes/keeper/images/-1"), 404)
        for name in tricky:
            assert c.delete(f"{API}/classes/{quote(name, safe='')}").status_code == 204, name
            assert_error(c.get(f"{API}/classes/{quote(name, safe='')}/thumbnail"), 404)
    assert_nothing_lost(server)


# --------------------------------------------------------------------------------------- validation


def test_validation_errors_are_400_with_detail(server: LiveServer, obj: Image.Image) -> None:
    scene = {"image": ("s.png", png(scene_with(obj, [(20, 20)], size=(200, 180))), "image/png")}
    with client(server) as c:
        for field, value in [("score_threshold", "abc"), ("max_detections", "many"), ("image_size", "1.5"),
                             ("max_detections", "1e99")]:
            assert_error(c.post(f"{API}/detect", data={field: value}, files=scene), 400, field)
        assert_error(c.post(f"{API}/detect"), 400, "image")
        assert_error(c.post(f"{API}/detect", content=b"{}", headers={"content-type": "application/json"}), 400)
        assert_error(c.post(f"{API}/detect/batch", data={"classes": "keeper"}), 400, "images")
        assert_error(c.post(f"{API}/classes", files=scene), 400, "name")
        many = [("class_images", (f"{i}.png", png(obj), "image/png")) for i in range(MAX_ADHOC_IMAGES + 1)]
        names = ",".join(f"c{i}" for i in range(MAX_ADHOC_IMAGES + 1))
        assert_error(c.post(f"{API}/detect", data={"class_names": names}, files=[("image", scene["image"]), *many]),
                     400, "class_images")
        schema = c.get("/openapi.json").json()
        responses = schema["paths"][f"{API}/detect"]["post"]["responses"]
        assert "400" in responses and "422" not in responses
    assert_nothing_lost(server)


# --------------------------------------------------------------------------------------- body limits


def _chunked_post(port: int, path: str, chunk: bytes, most: int) -> tuple[int, dict, int]:
    """POST a chunked multipart body of up to ``most`` bytes; stop sending as soon as an answer arrives.

    Returns the status, the JSON body and how many body bytes were sent.
    """
    boundary = "os2dboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sent = 0
    try:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        for piece in [head] + [chunk] * (most // len(chunk)):
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered while we were still sending
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        status, body = _read_answer(sock)
    finally:
        sock.close()
    return status, body, sent


def _read_answer(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the HTTP answer (with a Content-Length) that arrives on ``sock``."""
    answer = b""
    while True:
        head, sep, body = answer.partition(b"\r\n\r\n")
        lengths = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")]
        if sep and lengths and len(body) >= lengths[0]:
            return int(head.split()[1]), json.loads(body[:lengths[0]] or b"{}")
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed before a whole answer: {answer[:300]!r}")
        answer += data


def test_chunked_body_over_the_limit_is_cut_off_while_reading(server: LiveServer) -> None:
    chunk = b"\x00" * 65536
    total = 200 * 1024 * 1024
    for path, limit_mb in [(f"{API}/classes", UPLOAD_MB + 1), (f"{API}/detect", (1 + MAX_ADHOC_IMAGES) * UPLOAD_MB + 1)]:
        status, body, sent = _chunked_post(server.port, path, chunk, total)
        assert status == 413 and "larger than" in body["detail"], (path, status, body)
        # the answer came while sending: what was sent is the limit plus what the sockets buffer, not 200 MB
        assert limit_mb * 1024 * 1024 < sent < (limit_mb + 24) * 1024 * 1024, (path, sent)
    assert_nothing_lost(server)


def test_declared_body_over_the_limit_is_refused_before_reading(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((f"POST {API}/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                      "boundary=b\r\nContent-Length: 1000000000\r\n\r\n").encode())
        status, body = _read_answer(sock)  # no body sent at all
    assert status == 413 and "larger than" in body["detail"], body
    assert_nothing_lost(server)


@pytest.mark.slow
def test_concurrent_large_batches_keep_memory_bounded(server: LiveServer) -> None:
    """Images are decoded one at a time in the inference worker, not when a request arrives: three concurrent
    batches of four 20-megapixel images (60 MB each decoded) raise the server's peak RSS by far less than the
    ~720 MB that decoding them on arrival takes. The pyramid level is fixed (image_size 1024): with the default
    "auto" each image's level (up to 2048) depends on its content, and that is the detector's memory, not the
    decoding's (``benchmarks/load_test.py`` measures the default)."""
    images = [large_image(5000, 4000, seed) for seed in range(4)]
    assert all(len(b) < UPLOAD_MB * 1024 * 1024 for b in images)
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)]
    with client(server) as c:  # warm-up: one large image through decoding and detection
        assert c.post(f"{API}/detect", files={"image": ("w.png", images[0], "image/png")},
                      data={"image_size": "1024"}).status_code == 200
    before = server.peak_rss_mb()
    codes: list[int] = []

    def batch() -> None:
        with client(server) as c:
            r = c.post(f"{API}/detect/batch", files=files, data={"image_size": "1024"})
            codes.append(r.status_code)
            assert all("detections" in x for x in r.json()["results"]), r.text

    threads = [threading.Thread(target=batch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert codes == [200, 200, 200]
    growth = server.peak_rss_mb() - before
    print(f"peak RSS {before:.0f} MiB after warm-up, +{growth:.0f} MiB during the batches")
    assert growth < 250, f"peak RSS grew by {growth:.0f} MiB"
    assert_nothing_lost(server)


# ------------------------------------------------------------------------------------------- start-up


def _serve_fails(*commands: list[str]) -> list[str]:
    """Run the ``os2d serve`` commands (in parallel); each must exit 2 with one ``os2d: error:`` line, which is
    returned."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=serve_env())
             for cmd in commands]
    lines = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, (proc.returncode, err)
            assert err.startswith("os2d: error: ") and "Traceback" not in err, err
            lines.append(err.strip())
    finally:
        for proc in procs:  # a server that started instead of failing
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return lines


@pytest.mark.slow
def test_startup_errors_are_one_line(tmp_path: Path, server: LiveServer) -> None:
    import sqlite3

    corrupt, foreign, images_file = tmp_path / "corrupt", tmp_path / "foreign", tmp_path / "images_file"
    for d in (corrupt, foreign, images_file):
        d.mkdir()
    junk = b"this is not a database\n" * 100
    (corrupt / "gallery.sqlite3").write_bytes(junk)
    con = sqlite3.connect(foreign / "gallery.sqlite3")  # an SQLite file, not ours
    con.execute("CREATE TABLE classes (id INTEGER)")
    con.commit()
    con.close()
    (images_file / "images").write_text("x")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    in_use = Path(server.cmd[server.cmd.index("--data-dir") + 1])

    lines = _serve_fails(*[serve_command(d) for d in (corrupt, foreign, a_file, images_file, in_use)],
                         serve_command(tmp_path / "free", port=server.port))
    assert "gallery.sqlite3" in lines[0] and "move it away" in lines[0] and "backup" in lines[0]
    assert (corrupt / "gallery.sqlite3").read_bytes() == junk  # never replaced
    assert "not a usable os2d gallery database" in lines[1]
    assert "not a folder" in lines[2]
    assert "must be a writable folder" in lines[3]
    assert "in use by another os2d service" in lines[4]
    assert f"--port {server.port}: cannot listen there" in lines[5]
    assert_nothing_lost(server)


@pytest.mark.slow
def test_startup_read_only_data_dir(tmp_path: Path, obj: Image.Image) -> None:
    """A data dir on a read-only mount (``unshare``: root ignores file modes), with and without a gallery."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (user + mount namespaces) is not available here")
    from os2d.apps.service.store import GalleryStore

    mounts = {}
    for filled in (False, True):
        src = tmp_path / f"src{filled}"
        src.mkdir()
        if filled:
            store = GalleryStore(src)
            store.add_image("kept", obj)
            store.close()
        mounts[src] = tmp_path / f"ro{filled}"
        mounts[src].mkdir()
    files = sorted(p.name for p in tmp_path.rglob("*"))
    script = " && ".join(f'mount --bind -o ro "{src}" "{ro}"' for src, ro in mounts.items()) + ' && exec "$0" "$@"'
    for line in _serve_fails(*[["unshare", "-rm", "sh", "-c", script, *serve_command(ro)] for ro in mounts.values()]):
        assert "Read-only file system" in line or "writable" in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == files


# ---------------------------------------------------------------------------------------------- crash


@pytest.mark.slow
def test_crash_keeps_kernels_and_leaves_no_temp_files(tmp_path: Path, obj: Image.Image) -> None:
    """Add classes, SIGKILL the server, restart: no class is encoded again and no temporary file remains; with
    the cache written before the last class (a crash between the commit and the cache write), only that class
    is encoded again."""
    data = tmp_path / "data"
    scene = png(scene_with(obj, [(200, 100)]))
    others = [textured_object(seed=s) for s in (11, 12)]

    def run() -> LiveServer:
        return LiveServer(data, log_path=tmp_path / "server.log", verbose=True).start()

    def state(srv: LiveServer) -> tuple[list, list]:
        with client(srv) as c:
            classes = c.get(f"{API}/classes").json()["classes"]
            dets = c.post(f"{API}/detect", files={"image": ("s.png", scene, "image/png")}).json()["detections"]
        return classes, dets

    srv = run()
    with client(srv) as c:
        for name, img in [("cereal", obj), ("other", others[0])]:
            assert c.post(f"{API}/classes", data={"name": name}, files={"image": ("c.png", png(img), "image/png")}
                          ).status_code == 201
        model_id = c.get(f"{API}/ready").json()["model_id"]
        cache = data / f"kernels-{model_id}.pt"
        older_cache = cache.read_bytes()
        assert c.post(f"{API}/classes", data={"name": "third"},
                      files={"image": ("c.png", png(others[1]), "image/png")}).status_code == 201
    before = state(srv)
    srv.kill()
    (data / f".kernels-{model_id}.pt.x1y2z3.tmp").write_bytes(b"half a cache")  # killed mid-write
    (data / "images" / ".0123.png.abc.tmp").write_bytes(b"half an image")

    srv = run()
    try:
        assert "kernel cache: 3 classes from the cache, 0 encoded" in srv.log()
        assert not list(data.glob(".*.tmp")) and not list((data / "images").glob(".*.tmp"))
        assert state(srv) == before
    finally:
        srv.kill()
    cache.write_bytes(older_cache)  # as if killed after "third" was committed, before the cache was written
    srv = run()
    try:
        assert "kernel cache: 2 classes from the cache, 1 encoded" in srv.log()
        classes, dets = state(srv)
        assert classes == before[0]
        assert [d["label"] for d in dets] == [d["label"] for d in before[1]]
        assert [d["score"] for d in dets] == pytest.approx([d["score"] for d in before[1]], abs=1e-5)
    finally:
        srv.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
