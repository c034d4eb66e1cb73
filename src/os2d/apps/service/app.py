"""The OS2D HTTP service: ``create_app(settings)`` builds a FastAPI app with the model loaded once.

API (version 1, JSON; errors are ``{"detail": "..."}``):

* ``GET  /api/v1/health``, ``GET /api/v1/ready``
* ``POST /api/v1/detect`` (multipart: ``image``; optional ``classes``, ``class_images`` + ``class_names``,
  ``score_threshold``, ``max_detections``, ``image_size``, ``scales``, ``unknown``), ``POST /api/v1/detect/batch``
* ``POST /api/v1/report`` (JSON: ``detections`` records, ``min_score``, optional ``planogram`` CSV text): the
  shelf report of one photo's detections (rows, facings, order; planogram comparison); no model work
* ``POST /api/v1/negatives`` (multipart: ``name``, ``image``, optional ``box``): a negative exemplar of a class
  (what it must not be); its detections that the negative matches at least as well are dropped
* ``GET/POST /api/v1/classes``, ``DELETE /api/v1/classes/{name}``,
  ``GET /api/v1/classes/{name}/thumbnail``, ``GET /api/v1/classes/{name}/images/{i}``
* fine-tuning on stored training photos (``/api/v1/training/photos``, ``/api/v1/finetune``): see
  :mod:`os2d.apps.service.finetune_api`

All model work runs in one worker thread fed by a bounded queue: when ``queue_size`` requests are
already waiting or running, a new one is refused at once with 503; a request waiting longer than
``timeout_s`` gets 503 too. Images are decoded in that worker, one at a time, just before their detection
(a waiting request holds only its undecoded uploads, spooled to disk by the multipart parser): the decoded
pixels in memory are bounded by ``max_pixels`` for the worker plus one thumbnail, whatever the load.
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
from typing import Annotated, Any, BinaryIO, TypeVar
from urllib.parse import quote

import torch
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from os2d.apps.service.errors import install_error_handlers
from os2d.apps.service.finetune import FinetuneRunner
from os2d.apps.service.finetune_api import add_finetune_routes
from os2d.apps.service.limits import FORM_SLACK, BodyLimit
from os2d.apps.service.store import GalleryStore
from os2d.apps.service.training import TrainingStore
from os2d.config import AUTO, HEADS_PRECISIONS, InferenceConfig
from os2d.detector import Detector
from os2d.gallery import ClassGallery
from os2d.io import ImageError, load_image, validate_class_image
from os2d.unknown import unknown_items

logger = logging.getLogger(__name__)

T = TypeVar("T")
MB = 1024 * 1024
STATIC_DIR = Path(__file__).resolve().parent / "static"
API = "/api/v1"
MAX_CLASS_NAME = 100
MAX_LEVEL_SIDE = 4096  # sqrt(w*h) of the largest pyramid level a request may ask for
MAX_SCALES = 8
MAX_ADHOC_IMAGES = 8  # ad-hoc class images per detect request
MAX_REPORT_DETECTIONS = 10_000  # detections per POST /report (the most a detect request returns)
THUMBNAIL_CACHE = 256  # thumbnails kept in memory (a few kB each)


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
    heads_precision: str = InferenceConfig.heads_precision  # "int8-exact" (the library's default), "fp32" or "int8"
    trunk_precision: str | None = None  # InferenceConfig.trunk_precision: "bf16" photo backbone; None: library default
    verify_precision: str | None = None  # InferenceConfig.verify_precision: "bf16" second-look crops; None: likewise
    colour_rescore: float = 0.0  # InferenceConfig.colour_rescore: > 0 multiplies scores by a colour agreement
    verify_rescore: float | None = None  # InferenceConfig.verify_rescore (the second look); None: the library's default
    refine_top: int | None = None  # InferenceConfig.refine_top (zoomed re-localisation); None: the library's default
    reshape_top: int | None = None  # InferenceConfig.reshape_top (the second look's shape search); None: likewise
    verify_size: int | None = None  # InferenceConfig.verify_size (the second look's crop side); None: likewise
    verify_rivals: float | None = None  # InferenceConfig.verify_rivals (look-alikes of other classes); None: likewise

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if self.shortlist_top_k is not None and self.shortlist_top_k < 1:
            raise ValueError("shortlist_top_k must be >= 1 or None")
        if self.heads_precision not in HEADS_PRECISIONS:
            raise ValueError(f"heads_precision must be one of {HEADS_PRECISIONS}, got {self.heads_precision!r}")
        for key in ("trunk_precision", "verify_precision"):
            if getattr(self, key) not in (None, "fp32", "bf16"):
                raise ValueError(f"{key} must be 'fp32' or 'bf16', got {getattr(self, key)!r}")
        if not (math.isfinite(self.colour_rescore) and self.colour_rescore >= 0):
            raise ValueError(f"colour_rescore must be a finite number >= 0 (0: off), got {self.colour_rescore}")
        if self.verify_rescore is not None and not (math.isfinite(self.verify_rescore) and self.verify_rescore >= 0):
            raise ValueError(f"verify_rescore must be a finite number >= 0 (0: off), got {self.verify_rescore}")
        for key in ("refine_top", "reshape_top"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0 (0: off), got {getattr(self, key)}")
        if self.verify_size is not None and self.verify_size < 16:
            raise ValueError(f"verify_size must be at least 16 pixels, got {self.verify_size}")
        if self.verify_rivals is not None and not (math.isfinite(self.verify_rivals) and self.verify_rivals >= 0):
            raise ValueError(f"verify_rivals must be a finite number >= 0 (0: off), got {self.verify_rivals}")
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


def _parse_image_size(text: str) -> int | str | None:
    """The ``image_size`` form field: ``auto``, 0 (keep the size) or a sqrt(w*h) in [16, MAX_LEVEL_SIDE]."""
    text = text.strip().lower()
    if text in ("", AUTO):
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"image_size: expected 'auto', a number of pixels or 0, got {text!r}") from None
    if value != 0 and not 16 <= value <= MAX_LEVEL_SIDE:
        raise HTTPException(400, f"image_size must be 'auto', 0 (keep size) or between 16 and {MAX_LEVEL_SIDE}")
    return value or None


def _split_names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def check_class_name(name: str) -> str:
    """``name`` stripped, if it can be a class name: 400 otherwise.

    A class name is one URL path segment of ``/api/v1/classes/{name}`` once percent-encoded; ``.`` and ``..``
    are refused because clients resolve them as dot segments (``/classes/../thumbnail``), and '/', '\\' and
    control characters because they split or end a segment. ',' separates names in form fields.
    """
    name = (name or "").strip()
    if not name:
        raise HTTPException(400, "class name must not be empty")
    if len(name) > MAX_CLASS_NAME:
        raise HTTPException(400, f"class name longer than {MAX_CLASS_NAME} characters")
    if any(c in name for c in ",/\\") or any(not c.isprintable() for c in name):
        raise HTTPException(400, f"class name {name!r} must not contain ',', '/', '\\' or control characters")
    if name in (".", ".."):
        raise HTTPException(400, f"class name {name!r} is not allowed (a URL dot segment)")
    return name


def class_url(name: str) -> str:
    """The URL of a class: its name percent-encoded as one path segment."""
    return f"{API}/classes/{quote(name, safe='')}"


def stored_name(name: str) -> str:
    """A class name from a URL, unchanged; 404 for a name no class can have (it would alias another)."""
    try:
        valid = check_class_name(name) == name
    except HTTPException:
        valid = False
    if not valid:
        raise HTTPException(404, f"unknown class {name[:MAX_CLASS_NAME]!r}")
    return name


@dataclass(frozen=True)
class Upload:
    """An accepted image upload, not decoded yet: its bytes stay in the request's spooled file until the worker
    decodes it (:meth:`Service.decode`)."""

    file: BinaryIO
    what: str


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
        self.store = GalleryStore(settings.data_dir)  # first: a bad data dir fails before the model loads
        try:
            self.training = TrainingStore(self.store.connection, self.store.lock, settings.data_dir)
            self.weights = self._startup_weights()
            self.detector = self._new_detector(self.weights)
        except BaseException:
            self.store.close()
            raise
        self.finetune = FinetuneRunner(self.training, torch_threads=settings.torch_threads)
        self.model_id = self.detector.gallery.model_id
        self.lock = threading.RLock()  # keeps the store, the detector's gallery and the kernel cache in step
        self._thumbnails: dict[Path, bytes] = {}
        self._thumbnail_lock = threading.Lock()  # one thumbnail decoded at a time
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="os2d-inference")
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False
        self._load_gallery()
        logger.info("os2d service ready in %.1f s: weights %s (model %s), %d classes, data in %s",
                    time.perf_counter() - t0, self.weights, self.model_id, len(self.gallery),
                    settings.data_dir)

    @property
    def gallery(self) -> ClassGallery:
        return self.detector.gallery

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.finetune.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    # ------------------------------------------------------------------------- the model in use

    def _new_detector(self, weights: str) -> Detector:
        return Detector.from_weights(weights, device=self.settings.device,
                                     shortlist_top_k=self.settings.shortlist_top_k,
                                     heads_precision=self.settings.heads_precision,
                                     colour_rescore=self.settings.colour_rescore,
                                     **{k: v for k, v in (("verify_rescore", self.settings.verify_rescore),
                                                          ("refine_top", self.settings.refine_top),
                                                          ("reshape_top", self.settings.reshape_top),
                                                          ("verify_size", self.settings.verify_size),
                                                          ("verify_rivals", self.settings.verify_rivals),
                                                          ("trunk_precision", self.settings.trunk_precision),
                                                          ("verify_precision", self.settings.verify_precision))
                                        if v is not None})

    def _startup_weights(self) -> str:
        """``settings.weights``, or the fine-tuned model made from them that the page switched to last (kept
        across restarts); a fine-tune of other weights, or a missing file, is ignored (with a log line)."""
        active, base = self.training.get_state("active_weights"), self.training.get_state("active_base")
        if active is None:
            return self.settings.weights
        if base != self.settings.weights:
            logger.info("fine-tuned model %s was made from %s, not from --weights %s: not used", active, base,
                        self.settings.weights)
            return self.settings.weights
        if not Path(active).is_file():
            logger.warning("fine-tuned model %s is missing: using %s", active, self.settings.weights)
            self.training.set_state({"active_weights": None, "active_job": None, "active_base": None})
            return self.settings.weights
        logger.info("using the fine-tuned model %s (made from %s)", active, base)
        return active

    def model_record(self) -> dict[str, Any]:
        """Which weights detect now: the base ``--weights`` or a fine-tuned model made from them."""
        job = self.training.get_state("active_job") if self.weights != self.settings.weights else None
        return {"weights": self.weights, "base_weights": self.settings.weights,
                "finetune_job": int(job) if job is not None else None, "model_id": self.model_id}

    def _use_weights_job(self, weights: str, job_id: int | None) -> dict[str, Any]:
        """Switch detection to ``weights`` (in the inference worker: no detection runs meanwhile); the gallery is
        encoded again by the new model (or read from its kernel cache). A failure keeps the model in use."""
        with self.lock:
            detector = self._new_detector(weights)
            old = self.detector, self.weights, self.model_id
            self.detector, self.weights, self.model_id = detector, weights, detector.gallery.model_id
            try:
                self._load_gallery()
            except BaseException:
                self.detector, self.weights, self.model_id = old
                raise
            self.training.set_state({"active_weights": weights if job_id is not None else None,
                                     "active_job": str(job_id) if job_id is not None else None,
                                     "active_base": self.settings.weights if job_id is not None else None})
            logger.info("detecting with %s now (model %s)", weights, self.model_id)
            return self.model_record()

    def class_images(self) -> dict[str, list[Path]]:
        """Class name -> its stored pictures (not its negatives), for a fine-tune's classes file."""
        out: dict[str, list[Path]] = {}
        for im in self.store.images():
            if not im.negative:
                out.setdefault(im.class_name, []).append(im.path)
        return out

    # ---------------------------------------------------------------------------- gallery on disk

    def _load_gallery(self) -> None:
        """The gallery from the kernel cache; classes whose stored images changed since the cache was written
        (a crash between a commit and the cache write) are encoded again from their stored images."""
        t0 = time.perf_counter()
        cached, cached_ids = self.store.load_kernel_cache(self.model_id) or (None, {})
        gallery = ClassGallery(model_id=self.model_id)
        stored_ids = self.store.image_ids()
        encoded = 0
        for name, ids in stored_ids.items():
            if cached is not None and cached_ids.get(name) == ids and name in cached.class_names:
                part = cached.subset([name])
                assert part.kernels is not None
                gallery.add(name, part.kernels, part.view_names, part.view_aspect, part.view_colour)
                if part.negative_kernels is not None:
                    gallery.add_negative(name, part.negative_kernels, part.negative_view_names, part.negative_aspect)
                continue
            encoded += 1
            images = self.store.images(name)
            for im in sorted(images, key=lambda im: im.negative):  # the class's pictures before its negatives
                try:
                    views = self.detector.encode_class_images(load_image(im.path))
                except ImageError as e:
                    logger.warning("class %r: stored image %s unusable, skipped: %s", name, im.path, e)
                    continue
                if not im.negative:
                    gallery.add(name, *views)
                elif name in gallery.class_names:
                    gallery.add_negative(name, views.kernels, views.view_names, views.aspect)
        self.detector.set_gallery(gallery)
        if encoded or cached is None or cached_ids != stored_ids:
            self._save_cache()
        logger.info("kernel cache: %d classes from the cache, %d encoded (%.1f s)", len(stored_ids) - encoded,
                    encoded, time.perf_counter() - t0)

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

    async def accept_upload(self, up: UploadFile, what: str) -> Upload:
        """Check type, size and magic bytes of an upload (415, 413, 400) without decoding it."""
        ctype = (up.content_type or "").split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HTTPException(415, f"{what}: content type {ctype!r} is not an image")
        size = up.size
        if size is None:
            size = await run_in_threadpool(lambda: up.file.seek(0, os.SEEK_END))
        if size > self.settings.max_upload_bytes:
            raise HTTPException(413, f"{what}: upload larger than {self.settings.max_upload_mb:g} MB")
        if not size:
            raise HTTPException(400, f"{what}: empty upload")
        await up.seek(0)
        head = await up.read(16)
        await up.seek(0)
        if not sniff_image(head):
            raise HTTPException(415, f"{what}: not a PNG, JPEG, GIF, BMP, TIFF or WebP image")
        return Upload(up.file, what)

    def decode(self, upload: Upload) -> Image.Image:
        """The decoded image (in the worker, just before it is used): 413 above ``max_pixels``, 400 if corrupt."""
        upload.file.seek(0)
        data = upload.file.read(self.settings.max_upload_bytes + 1)
        try:
            return load_image(data, max_pixels=self.settings.max_pixels)
        except ImageError as e:
            raise _image_http_error(e, upload.what) from None

    # -------------------------------------------------------------------------------- detection

    def inference_changes(self, score_threshold: float | None, max_detections: int, image_size: str,
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
        changes["image_size"] = _parse_image_size(image_size)
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

    def _request_gallery(self, selected: list[str], adhoc: list[tuple[str, Upload]]) -> ClassGallery:
        """The classes of one request: the selected gallery classes (all if none) + ad-hoc ones, which replace
        gallery classes of the same name. Ad-hoc images are decoded and encoded one at a time."""
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
            for n, upload in adhoc:
                if n == name:
                    gallery.add(name, *self.detector.encode_class_images(self._class_image(upload, name)))
        return gallery

    def _class_image(self, upload: Upload, name: str, box: str | None = None) -> Image.Image:
        img = self.decode(upload)
        if box is not None and box.strip():
            img = img.crop(parse_box(box, img.size))
        try:
            validate_class_image(img)
        except ImageError as e:
            raise HTTPException(400, f"class {name!r}: {e}".replace("<PIL image>", "upload")) from None
        return img

    def known_score(self, unknown: bool) -> float | None:
        """The score at which a detection is known, for ``unknown`` items (None when not asked); 400 without a
        calibrated threshold."""
        if not unknown:
            return None
        known = self.detector.known_score
        if known is None:
            raise HTTPException(400, "unknown items need weights with a calibrated confidence threshold")
        return known

    def _detect_job(self, uploads: list[Upload | HTTPException], selected: list[str],
                    adhoc: list[tuple[str, Upload]], changes: dict[str, Any],
                    known_score: float | None = None) -> list[dict[str, Any]]:
        """Detections of each upload (a batch entry that fails gets ``{"error": detail}``; a single one raises)."""
        gallery = self._request_gallery(selected, adhoc)
        config = self.detector.config.replace(**changes)
        out: list[dict[str, Any]] = []
        for upload in uploads:
            try:
                out.append(self._detect_one(upload, gallery, config.image_size, config.scales, changes, known_score))
            except HTTPException as e:
                if len(uploads) == 1:
                    raise
                out.append({"error": e.detail})
        return out

    def _detect_one(self, upload: Upload | HTTPException, gallery: ClassGallery, image_size: int | str | None,
                    scales: tuple[float, ...], changes: dict[str, Any],
                    known_score: float | None = None) -> dict[str, Any]:
        if isinstance(upload, HTTPException):
            raise upload
        img = self.decode(upload)
        t0 = time.perf_counter()
        side = math.sqrt(img.width * img.height)
        if image_size == AUTO:  # the probe never makes a level larger than the image or auto_scale.max_size
            side = min(side, self.detector.config.auto_scale.max_size)
        elif image_size is not None:
            side = image_size
        if side * max(scales) > MAX_LEVEL_SIDE:
            raise HTTPException(400, f"image {img.width}x{img.height} with image_size={image_size or 0} "
                                     f"and scales {list(scales)} is too large to process; lower them")
        try:
            dets = self.detector.detect(img, gallery=gallery, **changes)
        except ImageError as e:  # larger than the detector's own pixel limit (os2d.io.DEFAULT_MAX_PIXELS)
            raise _image_http_error(e, "image") from None
        out = {"width": img.width, "height": img.height, "classes": list(gallery.class_names),
               "detections": dets.to_records(), "seconds": round(time.perf_counter() - t0, 4)}
        if dets.levels is not None:  # image_size="auto": the pyramid levels each class ran at
            out["levels"] = dets.levels
        if known_score is not None:  # os2d.unknown: what the gallery is missing
            out["unknown"] = [u.to_record() for u in unknown_items(dets, known_score)]
        return out

    async def adhoc_classes(self, class_images: list[UploadFile] | None,
                            class_names: str | None) -> list[tuple[str, Upload]]:
        files = [f for f in (class_images or []) if f is not None]
        names = _split_names(class_names)
        if not files and not names:
            return []
        if len(files) != len(names):
            raise HTTPException(400, f"class_names has {len(names)} names for {len(files)} class_images")
        if len(files) > MAX_ADHOC_IMAGES:
            raise HTTPException(400, f"{len(files)} class_images: at most {MAX_ADHOC_IMAGES} per request")
        return [(check_class_name(name), await self.accept_upload(up, f"class image {name.strip()!r}"))
                for name, up in zip(names, files, strict=True)]

    # ---------------------------------------------------------------------------------- gallery

    def class_record(self, name: str) -> dict[str, Any]:
        rec = self.store.get_class(name)
        if rec is None:
            raise HTTPException(404, f"unknown class {name!r}")
        return {"name": rec.name, "num_images": rec.num_images, "num_negatives": rec.num_negatives,
                "created": rec.created_iso, "thumbnail_url": f"{class_url(rec.name)}/thumbnail"}

    def _add_class_job(self, name: str, upload: Upload, box: str | None) -> dict[str, Any]:
        image = self._class_image(upload, name, box)
        with self.lock:
            before = self.gallery
            # kernels first: an encoding failure leaves the store as it was
            warnings = self.detector.add_class(name, image)
            try:
                self.store.add_image(name, image)
            except BaseException:
                self.detector.set_gallery(before)
                raise
            self._save_cache()
            return self.class_record(name) | {"warnings": [w.to_dict() for w in warnings]}

    def _add_negative_job(self, name: str, upload: Upload, box: str | None) -> dict[str, Any]:
        image = self._class_image(upload, name, box)
        with self.lock:
            if name not in self.gallery.class_names:
                raise HTTPException(404, f"unknown class {name!r}")
            before = self.gallery
            self.detector.add_negative(name, image)  # kernels first: a failure leaves the store as it was
            try:
                self.store.add_image(name, image, negative=True)
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
        images = [im for im in self.store.images(name) if not im.negative]
        if not images:
            raise HTTPException(404, f"unknown class {name!r}")
        if not 0 <= index < len(images):
            raise HTTPException(404, f"class {name!r} has {len(images)} images; no image {index}")
        return images[index].path

    def thumbnail(self, name: str, side: int = 160) -> bytes:
        """JPEG thumbnail of the class's first image; made once per stored file (files never change), one at a
        time (a stored image can be ``max_pixels`` large)."""
        path = self.class_image_path(name, 0)
        with self._thumbnail_lock:
            data = self._thumbnails.get(path)
            if data is not None:
                return data
            try:
                img = load_image(path)
            except ImageError as e:
                raise HTTPException(404, f"class {name!r}: image unavailable ({e})") from None
            img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            if len(self._thumbnails) >= THUMBNAIL_CACHE:
                self._thumbnails.pop(next(iter(self._thumbnails)))
            data = self._thumbnails[path] = buf.getvalue()
            return data


# ----------------------------------------------------------------------------------------- the app


def body_limits(settings: ServiceSettings) -> dict[str, int]:
    """Largest request body per upload endpoint: its most files of ``max_upload_mb`` each + form slack."""
    files = {f"{API}/classes": 1, f"{API}/negatives": 1, f"{API}/training/photos": 1,
             f"{API}/detect": 1 + MAX_ADHOC_IMAGES,
             f"{API}/detect/batch": settings.max_batch + MAX_ADHOC_IMAGES}
    limits = {path: n * settings.max_upload_bytes + FORM_SLACK for path, n in files.items()}
    limits[f"{API}/report"] = 8 * MB  # JSON: MAX_REPORT_DETECTIONS records with their corners
    return limits


class ReportRequest(BaseModel):
    """Body of ``POST /api/v1/report``."""

    detections: list[dict[str, Any]] = Field(description="detection records (label, score, box_xyxy) of one photo")
    min_score: float | None = Field(None, description="the score a detection needs to count (all when null)")
    planogram: str | None = Field(None, description="expected facings, CSV text 'class,row,facings'")


def shelf_report_response(req: ReportRequest) -> dict[str, Any]:
    """The report of ``req`` (and its planogram comparison); bad records or planograms are 400s."""
    from os2d.report import PlanogramError, compare_planogram, parse_planogram, shelf_report

    if len(req.detections) > MAX_REPORT_DETECTIONS:
        raise HTTPException(400, f"{len(req.detections)} detections: at most {MAX_REPORT_DETECTIONS} per report")
    if req.min_score is not None and not math.isfinite(req.min_score):
        raise HTTPException(400, "min_score must be a finite number")
    try:
        report = shelf_report(req.detections, min_score=req.min_score)
        plan = parse_planogram(req.planogram) if req.planogram and req.planogram.strip() else None
    except (ValueError, PlanogramError) as e:
        raise HTTPException(400, str(e)) from None
    out = report.to_dict()
    if plan is not None:
        out["planogram"] = compare_planogram(report, plan)
    return out


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
    app.add_middleware(BodyLimit, limits=body_limits(settings), default=FORM_SLACK)
    install_error_handlers(app)

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

    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()} if STATIC_DIR.is_dir() else {}

    @app.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        if path not in static_files:  # the page's own files only: no path is ever resolved
            raise HTTPException(404, "not found")
        return FileResponse(static_files[path])

    # ---------------------------------------------------------------------------------- API

    @app.get(f"{API}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(f"{API}/ready")
    async def ready() -> dict[str, Any]:
        return {"ready": True, **service.model_record(), "classes": len(service.gallery),
                "confidence_threshold": service.detector.confidence_threshold}

    @app.post(f"{API}/detect")
    async def detect(
        image: Annotated[UploadFile, File(description="the image to search")],
        classes: Annotated[str | None, Form(description="comma-separated gallery classes (empty = all)")] = None,
        class_images: Annotated[list[UploadFile] | None, File(description="ad-hoc class images")] = None,
        class_names: Annotated[str | None, Form(description="names of the ad-hoc class images")] = None,
        score_threshold: Annotated[float | None, Form()] = None,
        max_detections: Annotated[int, Form()] = 100,
        image_size: Annotated[str, Form(description="auto (levels chosen per image and class), sqrt(w*h) at "
                                                    "scale 1 in pixels, or 0 = keep size")] = AUTO,
        scales: Annotated[str | None, Form(description="comma-separated pyramid scales")] = None,
        unknown: Annotated[bool, Form(description="also return 'unknown' items: product-sized boxes no class "
                                                  "matches well enough (needs calibrated weights)")] = False,
    ) -> dict[str, Any]:
        changes = service.inference_changes(score_threshold, max_detections, image_size, scales)
        known = service.known_score(unknown)
        upload = await service.accept_upload(image, "image")
        adhoc = await service.adhoc_classes(class_images, class_names)
        selected = [check_class_name(n) for n in _split_names(classes)]
        return (await service.run_job(service._detect_job, [upload], selected, adhoc, changes, known))[0]

    @app.post(f"{API}/detect/batch")
    async def detect_batch(
        images: Annotated[list[UploadFile], File(description="the images (at most max_batch, default 16)")],
        classes: Annotated[str | None, Form()] = None,
        class_images: Annotated[list[UploadFile] | None, File()] = None,
        class_names: Annotated[str | None, Form()] = None,
        score_threshold: Annotated[float | None, Form()] = None,
        max_detections: Annotated[int, Form()] = 100,
        image_size: Annotated[str, Form()] = AUTO,
        scales: Annotated[str | None, Form()] = None,
        unknown: Annotated[bool, Form()] = False,
    ) -> dict[str, Any]:
        if not images:
            raise HTTPException(400, "no images")
        if len(images) > settings.max_batch:
            raise HTTPException(400, f"{len(images)} images: at most {settings.max_batch} per batch")
        changes = service.inference_changes(score_threshold, max_detections, image_size, scales)
        uploads: list[Upload | HTTPException] = []
        for i, up in enumerate(images):
            try:
                uploads.append(await service.accept_upload(up, f"image {i} ({up.filename or 'upload'})"))
            except HTTPException as e:
                uploads.append(e)
        adhoc = await service.adhoc_classes(class_images, class_names)
        selected = [check_class_name(n) for n in _split_names(classes)]
        known = service.known_score(unknown)
        return {"results": await service.run_job(service._detect_job, uploads, selected, adhoc, changes, known)}

    @app.post(f"{API}/report")
    async def report(req: ReportRequest) -> dict[str, Any]:
        return await run_in_threadpool(shelf_report_response, req)

    @app.get(f"{API}/classes")
    async def list_classes() -> dict[str, Any]:
        recs = await run_in_threadpool(service.store.classes)
        return {"classes": [{"name": r.name, "num_images": r.num_images, "num_negatives": r.num_negatives,
                             "created": r.created_iso, "thumbnail_url": f"{class_url(r.name)}/thumbnail"}
                            for r in recs]}

    @app.post(f"{API}/classes", status_code=201, dependencies=[Depends(require_token)])
    async def add_class(
        name: Annotated[str, Form(description="class name (adding to an existing name appends an image)")],
        image: Annotated[UploadFile, File(description="the class image")],
        box: Annotated[str | None, Form(description="optional crop 'x1,y1,x2,y2' in image pixels")] = None,
    ) -> dict[str, Any]:
        name = check_class_name(name)
        upload = await service.accept_upload(image, "class image")
        return await service.run_job(service._add_class_job, name, upload, box)

    @app.post(f"{API}/negatives", status_code=201, dependencies=[Depends(require_token)])
    async def add_negative(
        name: Annotated[str, Form(description="the class this is a picture of what it must not be")],
        image: Annotated[UploadFile, File(description="the negative exemplar (e.g. the neighbouring flavour)")],
        box: Annotated[str | None, Form(description="optional crop 'x1,y1,x2,y2' in image pixels")] = None,
    ) -> dict[str, Any]:
        name = check_class_name(name)
        upload = await service.accept_upload(image, "negative image")
        return await service.run_job(service._add_negative_job, name, upload, box)

    @app.delete(f"{API}/classes/{{name}}", status_code=204, dependencies=[Depends(require_token)])
    async def delete_class(name: str) -> Response:
        await run_in_threadpool(service.delete_class, stored_name(name))
        return Response(status_code=204)

    @app.get(f"{API}/classes/{{name}}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(name: str) -> Response:
        data = await run_in_threadpool(service.thumbnail, stored_name(name))
        return Response(data, media_type="image/jpeg")

    @app.get(f"{API}/classes/{{name}}/images/{{index}}", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}})
    async def class_image(name: str, index: int) -> Response:
        path = await run_in_threadpool(service.class_image_path, stored_name(name), index)
        return FileResponse(path, media_type="image/png")

    add_finetune_routes(app, service, require_token)
    return app
