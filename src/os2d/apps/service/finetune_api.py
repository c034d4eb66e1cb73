"""HTTP endpoints of fine-tuning in the service: training photos with boxes, fine-tune jobs, the model in use.

* ``POST /api/v1/training/photos`` (multipart ``image`` + ``boxes``: JSON ``[{"class": NAME, "box": [x1, y1, x2,
  y2]}, ...]`` in image pixels, classes from the gallery), ``GET /api/v1/training/photos``,
  ``GET /api/v1/training/photos/{id}/image``, ``DELETE /api/v1/training/photos/{id}``
* ``POST /api/v1/finetune`` (form ``steps``, default 200): a job on the stored photos (202); ``GET
  /api/v1/finetune`` (all jobs, the model in use), ``GET /api/v1/finetune/{id}`` (state, step, phase, result),
  ``POST /api/v1/finetune/{id}/cancel``, ``POST /api/v1/finetune/{id}/resume``
* ``POST /api/v1/finetune/{id}/activate`` (form ``force``): detect with the job's model (its ``best.pt``, only
  when it beat the starting model on the held-out photos, unless forced: then ``final.pt``);
  ``POST /api/v1/finetune/deactivate``: back to ``--weights``. The choice survives restarts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from os2d.apps.service.finetune import MAX_STEPS, MIN_STEPS
from os2d.apps.service.training import TrainingBox
from os2d.apps.service.uploads import API, image_suffix
from os2d.train.finetune import DEFAULT_STEPS

MAX_BOXES_PER_PHOTO = 1000
MAX_TRAINING_PHOTOS = 2000
MIN_BOX_SIDE = 4  # pixels
RowId = Annotated[int, PathParam(ge=1, le=2**62, description="row id")]  # SQLite INTEGER range


def parse_training_boxes(text: str, size: tuple[int, int], classes: list[str]) -> list[TrainingBox]:
    """The ``boxes`` form field: a JSON list of ``{"class", "box": [x1, y1, x2, y2]}`` inside the photo (coordinates
    up to 1 px outside are clipped), classes from the gallery; 400/404 with what is wrong."""
    try:
        items = json.loads(text)
    except ValueError as e:
        raise HTTPException(400, f"boxes: not JSON ({e})") from None
    if not isinstance(items, list) or not items:
        raise HTTPException(400, 'boxes: expected a non-empty JSON list of {"class": NAME, "box": [x1, y1, x2, y2]}')
    if len(items) > MAX_BOXES_PER_PHOTO:
        raise HTTPException(400, f"boxes: {len(items)} boxes, at most {MAX_BOXES_PER_PHOTO} per photo")
    w, h = size
    out = []
    for i, item in enumerate(items):
        box = item.get("box") if isinstance(item, dict) else None
        name = item.get("class") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(box, list) or len(box) != 4 \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise HTTPException(400, f'boxes[{i}]: expected {{"class": NAME, "box": [x1, y1, x2, y2]}}, got {item!r}'[:300])
        if name not in classes:
            raise HTTPException(404, f"boxes[{i}]: unknown class {name!r}; add it to the gallery first")
        x1, y1, x2, y2 = (float(v) for v in box)
        if min(x1, y1) < -1 or x2 > w + 1 or y2 > h + 1:
            raise HTTPException(400, f"boxes[{i}]: {box} is not inside the {w}x{h} photo")
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
            raise HTTPException(400, f"boxes[{i}]: {box} is smaller than {MIN_BOX_SIDE} px or has x2 <= x1 / y2 <= y1")
        out.append(TrainingBox(name, (x1, y1, x2, y2)))
    return out


def add_finetune_routes(app: FastAPI, service: Any, require_token: Callable[..., None]) -> None:
    """Register the endpoints above on ``app`` for ``service`` (the app's :class:`os2d.apps.service.app.Service`:
    its ``training`` store, ``finetune`` runner, inference worker and upload checks)."""
    auth = [Depends(require_token)]

    def add_photo_job(upload: Any, boxes_text: str) -> dict[str, Any]:
        img = service.decode(upload)  # 400 corrupt, 413 too many pixels
        boxes = parse_training_boxes(boxes_text, img.size, list(service.gallery.class_names))
        if len(service.training.photos()) >= MAX_TRAINING_PHOTOS:
            raise HTTPException(409, f"{MAX_TRAINING_PHOTOS} training photos stored already; delete some first")
        upload.file.seek(0)
        data = upload.file.read()
        suffix = image_suffix(data) or ".img"  # accept_upload sniffed it already
        try:
            photo = service.training.add_photo(data, suffix, img.size, boxes)
        except KeyError as e:  # a class deleted meanwhile
            raise HTTPException(404, str(e.args[0])) from None
        return photo.to_dict()

    @app.post(f"{API}/training/photos", status_code=201, dependencies=auth)
    async def add_training_photo(
        image: Annotated[UploadFile, File(description="a photo for fine-tuning")],
        boxes: Annotated[str, Form(description='JSON [{"class": NAME, "box": [x1, y1, x2, y2]}, ...] in pixels: '
                                               "every object of the gallery's classes in the photo")],
    ) -> dict[str, Any]:
        upload = await service.accept_upload(image, "training photo")
        return await service.run_job(add_photo_job, upload, boxes)

    @app.get(f"{API}/training/photos")
    async def list_training_photos() -> dict[str, Any]:
        photos = await run_in_threadpool(service.training.photos)
        summary = await run_in_threadpool(service.training.summary)
        return {"photos": [p.to_dict() for p in photos], **summary}

    def photo_path(photo_id: int) -> Path:
        photo = service.training.photo(photo_id)
        if photo is None:
            raise HTTPException(404, f"no training photo {photo_id}")
        return photo.path

    @app.get(f"{API}/training/photos/{{photo_id}}/image", response_class=FileResponse)
    async def training_photo_image(photo_id: RowId) -> Response:
        return FileResponse(await run_in_threadpool(photo_path, photo_id))

    @app.delete(f"{API}/training/photos/{{photo_id}}", status_code=204, dependencies=auth)
    async def delete_training_photo(photo_id: RowId) -> Response:
        if not await run_in_threadpool(service.training.delete_photo, photo_id):
            raise HTTPException(404, f"no training photo {photo_id}")
        return Response(status_code=204)

    # ------------------------------------------------------------------------------------- jobs

    def job_or_404(job_id: int):
        job = service.training.job(job_id)
        if job is None:
            raise HTTPException(404, f"no fine-tune job {job_id}")
        return job

    def start_job(steps: int) -> dict[str, Any]:
        try:
            job = service.finetune.start(steps, service.settings.weights, service.class_images())
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        except RuntimeError as e:
            raise HTTPException(409, str(e)) from None
        return service.finetune.record(job)

    @app.post(f"{API}/finetune", status_code=202, dependencies=auth)
    async def start_finetune(
        steps: Annotated[int, Form(description=f"training steps ({MIN_STEPS}-{MAX_STEPS}; about 0.6 s each on a "
                                               "2-core CPU)")] = DEFAULT_STEPS,
    ) -> dict[str, Any]:
        return await run_in_threadpool(start_job, steps)

    def job_records() -> dict[str, Any]:  # reads each job's training log: off the event loop
        return {"jobs": [service.finetune.record(j) for j in service.training.jobs()], "model": service.model_record()}

    @app.get(f"{API}/finetune")
    async def list_finetunes() -> dict[str, Any]:
        return await run_in_threadpool(job_records)

    @app.get(f"{API}/finetune/{{job_id}}")
    async def get_finetune(job_id: RowId) -> dict[str, Any]:
        return await run_in_threadpool(lambda: service.finetune.record(job_or_404(job_id)))

    def control(job_id: int, action: str) -> dict[str, Any]:
        job_or_404(job_id)
        try:
            job = service.finetune.cancel(job_id) if action == "cancel" else service.finetune.resume(job_id)
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        except RuntimeError as e:
            raise HTTPException(409, str(e)) from None
        return service.finetune.record(job)

    @app.post(f"{API}/finetune/{{job_id}}/cancel", dependencies=auth)
    async def cancel_finetune(job_id: RowId) -> dict[str, Any]:
        return await run_in_threadpool(control, job_id, "cancel")

    @app.post(f"{API}/finetune/{{job_id}}/resume", dependencies=auth)
    async def resume_finetune(job_id: RowId) -> dict[str, Any]:
        return await run_in_threadpool(control, job_id, "resume")

    @app.post(f"{API}/finetune/{{job_id}}/activate", dependencies=auth)
    async def activate_finetune(
        job_id: RowId,
        force: Annotated[bool, Form(description="use the fine-tuned model even when it was not better on the "
                                                "held-out photos")] = False,
    ) -> dict[str, Any]:
        job = await run_in_threadpool(job_or_404, job_id)
        if job.state != "done" or not job.result:
            raise HTTPException(409, f"job {job_id} is {job.state}: only a finished fine-tune can be used")
        if not job.result.get("better") and not force:
            raise HTTPException(409, f"job {job_id}'s model was not better than {job.base_weights} on the held-out "
                                     "photos; keep the current model, or send force=true to use it anyway")
        weights = job.result["weights"] if job.result.get("better") else job.result["final_weights"]
        if not Path(weights).is_file():
            raise HTTPException(410, f"job {job_id}'s weights file {weights} is gone")
        return await service.run_job(service._use_weights_job, weights, job_id)

    @app.post(f"{API}/finetune/deactivate", dependencies=auth)
    async def deactivate_finetune() -> dict[str, Any]:
        return await service.run_job(service._use_weights_job, service.settings.weights, None)


__all__ = ["add_finetune_routes", "parse_training_boxes"]
