"""``Service``: the detector, the persistent gallery and the one inference worker of an app (its queue, time-outs,
decoding of uploads, class and negative jobs, thumbnails). :mod:`os2d.apps.service.app` maps HTTP routes onto it."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import HTTPException, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from os2d.apps.service.finetune import FinetuneRunner
from os2d.apps.service.settings import ServiceSettings
from os2d.apps.service.store import GalleryStore
from os2d.apps.service.training import TrainingStore
from os2d.apps.service.uploads import (
    MAX_LEVEL_SIDE,
    MAX_SCALES,
    Upload,
    check_class_name,
    class_url,
    image_http_error,
    parse_box,
    parse_floats,
    parse_image_size,
    sniff_image,
    split_names,
)
from os2d.config import AUTO
from os2d.detector import Detector
from os2d.gallery import ClassGallery
from os2d.io import ImageError, load_image, validate_class_image
from os2d.unknown import unknown_items

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ADHOC_IMAGES = 8  # ad-hoc class images per detect request
THUMBNAIL_CACHE = 256  # thumbnails kept in memory (a few kB each)


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
                                                          ("verify_colour", self.settings.verify_colour),
                                                          ("verify_colour_margin",
                                                           self.settings.verify_colour_margin),
                                                          ("verify_chroma", self.settings.verify_chroma),
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
            raise image_http_error(e, upload.what) from None

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
        changes["image_size"] = parse_image_size(image_size)
        if scales is not None and scales.strip():
            vals = parse_floats(scales, "scales")
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
            raise image_http_error(e, "image") from None
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
        names = split_names(class_names)
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
