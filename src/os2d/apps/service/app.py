"""The OS2D HTTP service: ``create_app(settings)`` builds a FastAPI app with the model loaded once.

API (version 1, JSON; errors are ``{"detail": "..."}``):

* ``GET  /api/v1/health``, ``GET /api/v1/ready``
* ``POST /api/v1/detect`` (multipart: ``image``; optional ``classes``, ``class_images`` + ``class_names``,
  ``score_threshold``, ``max_detections``, ``image_size``, ``scales``), ``POST /api/v1/detect/batch``
* ``GET/POST /api/v1/classes``, ``DELETE /api/v1/classes/{name}``,
  ``GET /api/v1/classes/{name}/thumbnail``, ``GET /api/v1/classes/{name}/images/{i}``

All model work runs in one worker thread fed by a bounded queue: when ``queue_size`` requests are
already waiting or running, a new one is refused at once with 503; a request waiting longer than
``timeout_s`` gets 503 too.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import torch
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from os2d.apps.service.store import GalleryStore
from os2d.detector import Detector
from os2d.gallery import ClassGallery
from os2d.io import ImageError, load_image, validate_class_image

logger = logging.getLogger(__name__)

T = TypeVar("T")
MB = 1024 * 1024
STATIC_DIR = Path(__file__).resolve().parent / "static"
API = "/api/v1"
MAX_CLASS_NAME = 100
MAX_LEVEL_SIDE = 4096  # sqrt(w*h) of the largest pyramid level a request may ask for
MAX_SCALES = 8


def default_data_dir() -> Path:
    env = os.environ.get("OS2D_DATA")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "os2d"


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the service (``os2d serve`` options)."""

    weights: str = "default"
    data_dir: Path = field(default_factory=default_data_dir)
    token: str | None = None
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    queue_size: int = 4  # requests waiting or running in the inference worker; more -> 503
    timeout_s: float = 60.0  # per request, waiting included; longer -> 503
    device: str = "cpu"
    torch_threads: int | None = None  # torch.set_num_threads, only when given
    max_batch: int = 16
    shortlist_top_k: int | None = None  # InferenceConfig.shortlist_top_k: heads only for the K best-ranked classes

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if self.shortlist_top_k is not None and self.shortlist_top_k < 1:
            raise ValueError("shortlist_top_k must be >= 1 or None")
        if self.max_upload_mb <= 0 or self.max_pixels <= 0 or self.timeout_s <= 0:
            raise ValueError("max_upload_mb, max_pixels and timeout_s must be positive")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


# --------------------------------------------------------------------------------- image uploads

_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89PNG\r\n\x1a\n"), (0, b"\xff\xd8\xff"), (0, b"GIF87a"), (0, b"GIF89a"), (0, b"BM"),
    (0, b"II*\x00"), (0, b"MM\x00*"), (8, b"WEBP"),
)


def sniff_image(data: bytes) -> bool:
    """True if ``data`` starts like PNG, JPEG, GIF, BMP, TIFF or WebP."""
    if any(data[off:off + len(m)] == m for off, m in _MAGIC):
        return data[8:12] != b"WEBP" or data[:4] == b"RIFF"
    return False


def _image_http_error(e: ImageError, what: str) -> HTTPException:
    msg = str(e).replace("<bytes>", what)
    return HTTPException(413 if msg.startswith("image too large") else 400, msg)


def _parse_floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise HTTPException(400, f"{what}: expected comma-separated numbers, got {text!r}") from None
    if any(not math.isfinite(v) for v in vals):
        raise HTTPException(400, f"{what}: numbers must be finite, got {text!r}")
    return vals


def _split_names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def check_class_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise HTTPException(400, "class name must not be empty")
    if len(name) > MAX_CLASS_NAME:
        raise HTTPException(400, f"class name longer than {MAX_CLASS_NAME} characters")
    if any(c in name for c in ",/\\") or any(not c.isprintable() for c in name):
        raise HTTPException(400, f"class name {name!r} must not contain ',', '/', '\\' or control characters")
    return name


def parse_box(text: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    vals = _parse_floats(text, "box")
    if len(vals) != 4:
        raise HTTPException(400, f"box: expected 'x1,y1,x2,y2', got {text!r}")
    w, h = size
    if all(-1.0 <= v for v in vals) and vals[0] <= w + 1 and vals[2] <= w + 1 and vals[1] <= h + 1 \
            and vals[3] <= h + 1:  # tolerate rounding of client-side coordinates by up to 1 px
        vals = [min(max(v, 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(vals)]
    x1, y1, x2, y2 = vals
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise HTTPException(400, f"box {text!r} is not inside the {w}x{h} image with x1 < x2 and y1 < y2")
    return round(x1), round(y1), round(x2), round(y2)


# ------------------------------------------------------------------------------------- the service


class Service:
    """The detector, the persistent gallery and the inference worker of one app.

    Every detection and class encoding goes through :class:`os2d.detector.Detector`; the detector swaps
    galleries rather than changing one, so a running detection keeps the gallery it started with.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        if settings.torch_threads:
            torch.set_num_threads(int(settings.torch_threads))
        t0 = time.perf_counter()
        self.detector = Detector.from_weights(settings.weights, device=settings.device,
                                              shortlist_top_k=settings.shortlist_top_k)
        self.model_id = self.detector.gallery.model_id
        self.lock = threading.RLock()  # keeps the store, the detector's gallery and the kernel cache in step
        self.store = GalleryStore(settings.data_dir)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="os2d-inference")
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False
        self._load_gallery()
        logger.info("os2d service ready in %.1f s: weights %s (model %s), %d classes, data in %s",
                    time.perf_counter() - t0, settings.weights, self.model_id, len(self.gallery),
                    settings.data_dir)

    @property
    def gallery(self) -> ClassGallery:
        return self.detector.gallery

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    # ---------------------------------------------------------------------------- gallery on disk

    def _load_gallery(self) -> None:
        """The gallery from the kernel cache, or encoded again from the stored class images."""
        cached = self.store.load_kernel_cache(self.model_id)
        if cached is not None:
            self.detector.set_gallery(cached)
            return
        for rec in self.store.classes():
            images = []
            for im in self.store.images(rec.name):
                try:
                    images.append(load_image(im.path))
                except ImageError as e:
                    logger.warning("class %r: stored image %s unreadable, skipped: %s", rec.name, im.path, e)
            try:
                if images:
                    self.detector.add_class(rec.name, images)
            except ImageError as e:
                logger.warning("class %r: stored images unusable, class skipped: %s", rec.name, e)
        self._save_cache()

    def _save_cache(self) -> None:
        self.store.save_kernel_cache(self.gallery)

    # -------------------------------------------------------------------------------- the queue

    def _release(self, _fut: Any = None) -> None:
        with self._pending_lock:
            self._pending -= 1

    async def run_job(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the inference worker; 503 when the queue is full or on timeout."""
        with self._pending_lock:
            if self._pending >= self.settings.queue_size:
                raise HTTPException(503, f"server busy: {self._pending} requests queued (limit "
                                         f"{self.settings.queue_size}); retry later", headers={"Retry-After": "1"})
            self._pending += 1
        try:
            fut = self.executor.submit(fn, *args)
        except RuntimeError:  # executor shut down
            self._release()
            raise HTTPException(503, "server shutting down") from None
        fut.add_done_callback(self._release)  # the slot is held until the work really ends
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.settings.timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()
            raise HTTPException(503, f"request timed out after {self.settings.timeout_s:g} s",
                                headers={"Retry-After": "1"}) from None

    # ---------------------------------------------------------------------------- upload helpers

    async def read_upload(self, up: UploadFile, what: str) -> bytes:
        ctype = (up.content_type or "").split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HTTPException(415, f"{what}: content type {ctype!r} is not an image")
        limit = self.settings.max_upload_bytes
        data = await up.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{what}: upload larger than {self.settings.max_upload_mb:g} MB")
        if not data:
            raise HTTPException(400, f"{what}: empty upload")
        if not sniff_image(data):
            raise HTTPException(415, f"{what}: not a PNG, JPEG, GIF, BMP, TIFF or WebP image")
        return data

    def decode(self, data: bytes, what: str) -> Image.Image:
        try:
            return load_image(data, max_pixels=self.settings.max_pixels)
        except ImageError as e:
            raise _image_http_error(e, what) from None

    async def read_image(self, up: UploadFile, what: str) -> Image.Image:
        data = await self.read_upload(up, what)
        return await run_in_threadpool(self.decode, data, what)

    # -------------------------------------------------------------------------------- detection

    def inference_changes(self, score_threshold: float | None, max_detections: int, image_size: int,
                          scales: str | None) -> dict[str, Any]:
        """Checked request options as :class:`~os2d.config.InferenceConfig` changes for :meth:`Detector.detect`."""
        changes: dict[str, Any] = {}
        if score_threshold is not None:
            if not math.isfinite(score_threshold):
                raise HTTPException(400, "score_threshold must be a finite number")
            changes["score_threshold"] = float(score_threshold)
        if not 0 <= max_detections <= 10_000:
            raise HTTPException(400, "max_detections must be between 0 and 10000")
        changes["max_detections"] = max_detections
        if image_size != 0 and not 16 <= image_size <= MAX_LEVEL_SIDE:
            raise HTTPException(400, f"image_size must be 0 (keep size) or between 16 and {MAX_LEVEL_SIDE}")
        changes["image_size"] = image_size or None
        if scales is not None and scales.strip():
            vals = _parse_floats(scales, "scales")
            if not vals or len(vals) > MAX_SCALES or any(not 0.05 <= v <= 4.0 for v in vals):
                raise HTTPException(400, f"scales: 1 to {MAX_SCALES} numbers in [0.05, 4], got {scales!r}")
            changes["scales"] = tuple(vals)
        try:
            self.detector.config.replace(**changes)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return changes

    def _request_gallery(self, selected: list[str], adhoc: list[tuple[str, Image.Image]]) -> ClassGallery:
        """The classes of one request: the selected gallery classes (all if none) + ad-hoc ones, which replace
        gallery classes of the same name."""
        gallery = self.gallery  # one snapshot for the whole request
        unknown = [n for n in selected if n not in gallery.class_names]
        if unknown:
            raise HTTPException(404, f"unknown class(es): {', '.join(unknown)}")
        adhoc_names = list(dict.fromkeys(n for n, _ in adhoc))
        wanted = [n for n in (selected or gallery.class_names) if n not in adhoc_names]
        if wanted == gallery.class_names and not adhoc_names:
            return gallery
        gallery = gallery.subset(wanted)
        for name in adhoc_names:
            gallery.add(name, *self.detector.encode_class_images([im for n, im in adhoc if n == name]))
        return gallery

    def _detect_job(self, images: list[Image.Image | HTTPException], selected: list[str],
                    adhoc: list[tuple[str, Image.Image]], changes: dict[str, Any]) -> list[dict[str, Any]]:
        gallery = self._request_gallery(selected, adhoc)
        config = self.detector.config.replace(**changes)
        out: list[dict[str, Any]] = []
        for img in images:
            if isinstance(img, HTTPException):
                out.append({"error": img.detail})
                continue
            t0 = time.perf_counter()
            side = config.image_size or math.sqrt(img.width * img.height)
            if side * max(config.scales) > MAX_LEVEL_SIDE:
                err = HTTPException(400, f"image {img.width}x{img.height} with image_size={config.image_size or 0} "
                                         f"and scales {list(config.scales)} is too large to process; lower them")
                if len(images) == 1:
                    raise err
                out.append({"error": err.detail})
                continue
            try:
                dets = self.detector.detect(img, gallery=gallery, **changes)
            except ImageError as e:  # larger than the detector's own pixel limit (os2d.io.DEFAULT_MAX_PIXELS)
                if len(images) == 1:
                    raise _image_http_error(e, "image") from None
                out.append({"error": _image_http_error(e, "image").detail})
                continue
            out.append({"width": img.width, "height": img.height, "classes": list(gallery.class_names),
                        "detections": dets.to_records(), "seconds": round(time.perf_counter() - t0, 4)})
        return out

    async def adhoc_classes(self, class_images: list[UploadFile] | None,
                            class_names: str | None) -> list[tuple[str, Image.Image]]:
        files = [f for f in (class_images or []) if f is not None]
        names = _split_names(class_names)
        if not files and not names:
            return []
        if len(files) != len(names):
            raise HTTPException(400, f"class_names has {len(names)} names for {len(files)} class_images")
        out = []
        for name, up in zip(names, files, strict=True):
            name = check_class_name(name)
            img = await self.read_image(up, f"class image {name!r}")
            try:
                validate_class_image(img)
            except ImageError as e:
                raise HTTPException(400, f"class {name!r}: {e}".replace("<PIL image>", "upload")) from None
            out.append((name, img))
        return out

    # ---------------------------------------------------------------------------------- gallery

    def class_record(self, name: str) -> dict[str, Any]:
        rec = self.store.get_class(name)
        if rec is None:
            raise HTTPException(404, f"unknown class {name!r}")
        return {"name": rec.name, "num_images": rec.num_images, "created": rec.created_iso,
                "thumbnail_url": f"{API}/classes/{quote(rec.name, safe='')}/thumbnail"}

    def _add_class_job(self, name: str, image: Image.Image) -> dict[str, Any]:
        with self.lock:
            before = self.gallery
            self.detector.add_class(name, image)  # kernels first: an encoding failure leaves the store as it was
            try:
                self.store.add_image(name, image)
            except BaseException:
                self.detector.set_gallery(before)
                raise
            self._save_cache()
            return self.class_record(name)

    def delete_class(self, name: str) -> None:
        with self.lock:
            if not self.store.delete_class(name):
                raise HTTPException(404, f"unknown class {name!r}")
            if name in self.gallery.class_names:
                self.detector.remove_class(name)
            self._save_cache()

    def class_image_path(self, name: str, index: int) -> Path:
        images = self.store.images(name)
        if not images:
            raise HTTPException(404, f"unknown class {name!r}")
        if not 0 <= index < len(images):
            raise HTTPException(404, f"class {name!r} has {len(images)} images; no image {index}")
        return images[index].path

    def thumbnail(self, name: str, side: int = 160) -> bytes:
        path = self.class_image_path(name, 0)
        try:
            img = load_image(path)
        except ImageError as e:
            raise HTTPException(404, f"class {name!r}: image unavailable ({e})") from None
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()


# ----------------------------------------------------------------------------------------- the app


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the app; the model is loaded and the gallery restored here, once."""
    settings = settings or ServiceSettings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="OS2D one-shot object detection", version="1", lifespan=lifespan,
                  description="Register classes from one picture each, then detect them in any image.")
    app.state.service = service
    app.state.settings = settings
    body_limit = settings.max_upload_bytes * (settings.max_batch + 1) + MB

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Any]) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return JSONResponse({"detail": "invalid Content-Length"}, status_code=400)
            if int(length) > body_limit:
                return JSONResponse({"detail": f"request body larger than {body_limit // MB} MB"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error", exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    def require_token(request: Request) -> None:
        if not settings.token:
            return
        auth = request.headers.get("authorization", "")
        got = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-os2d-token", "")
        if not got or not hmac.compare_digest(got.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong token (Authorization: Bearer TOKEN or X-OS2D-Token)",
                                headers={"WWW-Authenticate": "Bearer"})

    # -------------------------------------------------------------------------------- pages

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse("<!doctype html><title>OS2D</title><h1>OS2D service</h1>"
                            "<p>The web page is not installed; see the <a href='/docs'>API docs</a>.</p>")

    @app.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        base = STATIC_DIR.resolve()
        target = (base / path).resolve()
        if not base.is_dir() or not target.is_relative_to(base) or not target.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(target)

    # ---------------------------------------------------------------------------------- API

    @app.get(f"{API}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(f"{API}/ready")
    async def ready() -> dict[str, Any]:
        return {"ready": True, "weights": settings.weights, "model_id": service.model_id,
                "classes": len(service.gallery)}

    @app.post(f"{API}/detect")
    async def detect(
        image: Annotated[UploadFile, File(description="the image to search")],
        classes: Annotated[str | None, Form(description="comma-separated gallery classes (empty = all)")] = None,
        class_images: Annotated[list[UploadFile] | None, File(description="ad-hoc class images")] = None,
        class_names: Annotated[str | None, Form(description="names of the ad-hoc class images")] = None,
        score_threshold: Annotated[float | None, Form()] = None,
        max_detections: Annotated[int, Form()] = 100,
        image_size: Annotated[int, Form(description="sqrt(w*h) at scale 1; 0 = keep size")] = 1024,
        scales: Annotated[str | None, Form(description="comma-separated pyramid scales")] = None,
    ) -> dict[str, Any]:
        changes = service.inference_changes(score_threshold, max_detections, image_size, scales)
        img = await service.read_image(image, "image")
        adhoc = await service.adhoc_classes(class_images, class_names)
        selected = [check_class_name(n) for n in _split_names(classes)]
        return (await service.run_job(service._detect_job, [img], selected, adhoc, changes))[0]

    @app.post(f"{API}/detect/batch")
    async def detect_batch(
        images: Annotated[list[UploadFile], File(description="the images (at most max_batch, default 16)")],
        classes: Annotated[str | None, Form()] = None,
        class_images: Annotated[list[UploadFile] | None, File()] = None,
        class_names: Annotated[str | None, Form()] = None,
        score_threshold: Annotated[float | None, Form()] = None,
        max_detections: Annotated[int, Form()] = 100,
        image_size: Annotated[int, Form()] = 1024,
        scales: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        if not images:
            raise HTTPException(400, "no images")
        if len(images) > settings.max_batch:
            raise HTTPException(400, f"{len(images)} images: at most {settings.max_batch} per batch")
        changes = service.inference_changes(score_threshold, max_detections, image_size, scales)
        decoded: list[Image.Image | HTTPException] = []
        for i, up in enumerate(images):
            try:
                decoded.append(await service.read_image(up, f"image {i} ({up.filename or 'upload'})"))
            except HTTPException as e:
                decoded.append(e)
        adhoc = await service.adhoc_classes(class_images, class_names)
        selected = [check_class_name(n) for n in _split_names(classes)]
        return {"results": await service.run_job(service._detect_job, decoded, selected, adhoc, changes)}

    @app.get(f"{API}/classes")
    async def list_classes() -> dict[str, Any]:
        recs = await run_in_threadpool(service.store.classes)
        return {"classes": [{"name": r.name, "num_images": r.num_images, "created": r.created_iso,
                             "thumbnail_url": f"{API}/classes/{quote(r.name, safe='')}/thumbnail"} for r in recs]}

    @app.post(f"{API}/classes", status_code=201, dependencies=[Depends(require_token)])
    async def add_class(
        name: Annotated[str, Form(description="class name (adding to an existing name appends an image)")],
        image: Annotated[UploadFile, File(description="the class image")],
        box: Annotated[str | None, Form(description="optional crop 'x1,y1,x2,y2' in image pixels")] = None,
    ) -> dict[str, Any]:
        name = check_class_name(name)
        img = await service.read_image(image, "class image")
        if box is not None and box.strip():
            img = img.crop(parse_box(box, img.size))
        try:
            validate_class_image(img)
        except ImageError as e:
            raise HTTPException(400, str(e).replace("<PIL image>", "upload")) from None
        return await service.run_job(service._add_class_job, name, img)

    @app.delete(f"{API}/classes/{{name}}", status_code=204, dependencies=[Depends(require_token)])
    async def delete_class(name: str) -> Response:
        await run_in_threadpool(service.delete_class, name)
        return Response(status_code=204)

    @app.get(f"{API}/classes/{{name}}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(name: str) -> Response:
        data = await run_in_threadpool(service.thumbnail, name)
        return Response(data, media_type="image/jpeg")

    @app.get(f"{API}/classes/{{name}}/images/{{index}}", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}})
    async def class_image(name: str, index: int) -> Response:
        path = await run_in_threadpool(service.class_image_path, name, index)
        return FileResponse(path, media_type="image/png")

    return app
