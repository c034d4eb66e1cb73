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

import hmac
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from os2d.apps.service.errors import install_error_handlers
from os2d.apps.service.finetune_api import add_finetune_routes
from os2d.apps.service.limits import FORM_SLACK, BodyLimit
from os2d.apps.service.service import MAX_ADHOC_IMAGES, Service
from os2d.apps.service.settings import MB, ServiceSettings, default_data_dir
from os2d.apps.service.uploads import API, Upload, check_class_name, class_url, split_names, stored_name
from os2d.config import AUTO
from os2d.report import ONE_LABEL_IOU

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_REPORT_DETECTIONS = 10_000  # detections per POST /report (the most a detect request returns)

__all__ = ["ServiceSettings", "create_app", "default_data_dir"]


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
    one_label_iou: float | None = Field(ONE_LABEL_IOU, description="counted detections of different classes overlapping with "
                                        "IoU >= this are one facing, the best-scoring one (null: all count)")


def shelf_report_response(req: ReportRequest) -> dict[str, Any]:
    """The report of ``req`` (and its planogram comparison); bad records or planograms are 400s."""
    from os2d.report import PlanogramError, compare_planogram, parse_planogram, shelf_report

    if len(req.detections) > MAX_REPORT_DETECTIONS:
        raise HTTPException(400, f"{len(req.detections)} detections: at most {MAX_REPORT_DETECTIONS} per report")
    if req.min_score is not None and not math.isfinite(req.min_score):
        raise HTTPException(400, "min_score must be a finite number")
    try:
        report = shelf_report(req.detections, min_score=req.min_score, one_label_iou=req.one_label_iou)
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
        selected = [check_class_name(n) for n in split_names(classes)]
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
        selected = [check_class_name(n) for n in split_names(classes)]
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
