"""Fine-tuning in the service: training photos with boxes (stored, validated, cascading with their class), a real
fine-tune job in a child process (progress, result, switching the model, across restarts), cancel and resume."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
from helpers import png, scene_with, textured_object  # noqa: E402

from os2d.apps.service.app import ServiceSettings, create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

API = "/api/v1"
OBJ = (128, 160)
SCENE = (384, 288)
# (class, top-left corners) of 5 photos: 2 classes, one photo with both
PHOTOS = [("A", [(10, 10), (240, 120)]), ("A", [(120, 60)]), ("B", [(40, 100)]), ("B", [(200, 100), (20, 10)]),
          ("AB", [(20, 40), (230, 110)])]



@pytest.fixture(scope="module")
def objects() -> dict[str, Image.Image]:
    return {"A": textured_object(OBJ, seed=3), "B": textured_object(OBJ, seed=7)}


def photo(objects: dict[str, Image.Image], i: int) -> tuple[bytes, list[dict]]:
    classes, corners = PHOTOS[i]
    scene = scene_with(objects[classes[0]], [], size=SCENE, seed=i)
    boxes = []
    for k, (x, y) in enumerate(corners):
        cls = classes[k % len(classes)]
        scene.paste(objects[cls], (x, y))
        boxes.append({"class": cls, "box": [x, y, x + OBJ[0], y + OBJ[1]]})
    return png(scene), boxes


def add_photo(c: TestClient, data: bytes, boxes) -> object:
    text = boxes if isinstance(boxes, str) else json.dumps(boxes)
    return c.post(f"{API}/training/photos", data={"boxes": text}, files={"image": ("p.png", data, "image/png")})


def setup_gallery(c: TestClient, objects: dict[str, Image.Image], photos: int = len(PHOTOS)) -> None:
    for name, img in objects.items():
        assert c.post(f"{API}/classes", data={"name": name},
                      files={"image": ("c.png", png(img), "image/png")}).status_code == 201
    for i in range(photos):
        r = add_photo(c, *photo(objects, i))
        assert r.status_code == 201, r.text


def wait_for(c: TestClient, job_id: int, states: tuple[str, ...], timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = c.get(f"{API}/finetune/{job_id}").json()
        if rec["state"] in states:
            return rec
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {rec}")


def test_training_photos_are_stored_checked_and_go_with_their_class(tmp_path, objects):
    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:
        setup_gallery(c, objects, photos=2)
        data, boxes = photo(objects, 0)
        r = c.get(f"{API}/training/photos").json()
        assert (r["num_photos"], r["num_boxes"], r["boxes_per_class"]) == (2, 3, {"A": 3})
        assert [p["boxes"] for p in r["photos"]] == [boxes, photo(objects, 1)[1]]
        assert [(p["width"], p["height"]) for p in r["photos"]] == [SCENE, SCENE]
        # what is wrong is said, and nothing is stored
        cases = [("not json", 400, "not JSON"), ("[]", 400, "non-empty"),
                 ([{"class": "Z", "box": [0, 0, 50, 50]}], 404, "unknown class 'Z'"),
                 ([{"class": "A", "box": [0, 0, 500, 50]}], 400, "not inside the 384x288 photo"),
                 ([{"class": "A", "box": [10, 10, 12, 50]}], 400, "smaller than 4 px"),
                 ([{"class": "A", "box": [0, 0, 50]}], 400, "expected")]
        for boxes_field, status, message in cases:
            r = add_photo(c, data, boxes_field)
            assert r.status_code == status and message in r.json()["detail"], (boxes_field, r.text)
        r = c.post(f"{API}/training/photos", data={"boxes": json.dumps(boxes)},
                   files={"image": ("p.png", b"not an image at all", "image/png")})
        assert r.status_code == 415
        assert c.get(f"{API}/training/photos").json()["num_boxes"] == 3
        # the stored photo is served as uploaded; deleting the class deletes its boxes (the photo stays)
        assert c.get(f"{API}/training/photos/1/image").content == data
        assert c.delete(f"{API}/classes/A").status_code == 204
        assert c.get(f"{API}/training/photos").json()["num_boxes"] == 0
        assert c.delete(f"{API}/training/photos/1").status_code == 204
        assert c.delete(f"{API}/training/photos/1").status_code == 404
        assert c.get(f"{API}/training/photos/1/image").status_code == 404
        # a fine-tune needs two photos with boxes
        r = c.post(f"{API}/finetune", data={"steps": "2"})
        assert r.status_code == 400 and "at least 2" in r.json()["detail"]
        assert c.post(f"{API}/finetune", data={"steps": "0"}).status_code == 400


def test_finetune_job_runs_switches_the_model_and_survives_a_restart(tmp_path, objects):
    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:
        setup_gallery(c, objects)
        r = c.post(f"{API}/finetune", data={"steps": "3"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] == "running" and job["steps"] == 3 and (job["photos"], job["boxes"]) == (5, 8)
        assert c.post(f"{API}/finetune", data={"steps": "3"}).status_code == 409  # one at a time
        assert c.post(f"{API}/finetune/{job['id']}/activate").status_code == 409  # not finished
        done = wait_for(c, job["id"], ("done", "failed"))
        assert done["state"] == "done", done["error"]
        res = done["result"]
        assert done["step"] == 3 and done["phase"] == "finished"
        assert res["before"]["step"] == 0 and res["after"]["step"] == 3
        assert 0.0 <= res["before"]["mAP"] <= 1.0 and 0.0 <= res["after"]["mAP"] <= 1.0
        assert res["better"] == (res["after"]["mAP"] > res["before"]["mAP"])
        assert Path(res["weights"]).is_file() and Path(res["final_weights"]).is_file()
        # the held-out split: photos of the job folder, none trained and held out at once
        run = Path(res["final_weights"]).parent
        train, held = ((run / n).read_text().splitlines()[1:] for n in ("train.csv", "heldout.csv"))
        assert train and held and not {r.split(",")[0] for r in train} & {r.split(",")[0] for r in held}
        if not res["better"]:
            r = c.post(f"{API}/finetune/{job['id']}/activate")
            assert r.status_code == 409 and "not better" in r.json()["detail"]
        r = c.post(f"{API}/finetune/{job['id']}/activate", data={"force": "true"})
        assert r.status_code == 200, r.text
        model = r.json()
        assert model["finetune_job"] == job["id"] and model["weights"] != "default"
        ready = c.get(f"{API}/ready").json()
        assert ready["weights"] == model["weights"] and ready["base_weights"] == "default"
        r = c.post(f"{API}/detect", files={"image": ("s.png", photo(objects, 0)[0], "image/png")})
        assert r.status_code == 200 and r.json()["detections"]
    # a restart keeps the fine-tuned model and the finished job
    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:
        ready = c.get(f"{API}/ready").json()
        assert ready["finetune_job"] == job["id"] and ready["weights"] == model["weights"]
        jobs = c.get(f"{API}/finetune").json()
        assert [j["state"] for j in jobs["jobs"]] == ["done"] and jobs["model"]["finetune_job"] == job["id"]
        back = c.post(f"{API}/finetune/deactivate").json()
        assert back["weights"] == "default" and back["finetune_job"] is None
    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:  # ... and the switch back
        assert c.get(f"{API}/ready").json()["weights"] == "default"


def test_cancel_resume_and_a_service_stopped_mid_job(tmp_path, objects):
    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:
        setup_gallery(c, objects)
        job = c.post(f"{API}/finetune", data={"steps": "500"}).json()
        r = c.post(f"{API}/finetune/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert c.post(f"{API}/finetune/{job['id']}/cancel").status_code == 409  # not running
        r = c.post(f"{API}/finetune/{job['id']}/resume")  # cancelled before its first checkpoint
        assert r.status_code == 409 and "first checkpoint" in r.json()["detail"]
        job2 = c.post(f"{API}/finetune", data={"steps": "500"}).json()
        assert job2["id"] == job["id"] + 1
    # the app closed while job2 ran: it is interrupted, not left running, and the next service says so
    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:
        states = {j["id"]: j["state"] for j in c.get(f"{API}/finetune").json()["jobs"]}
        assert states == {job["id"]: "cancelled", job2["id"]: "interrupted"}
        assert c.get(f"{API}/finetune/999").status_code == 404
