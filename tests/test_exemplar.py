"""Checks of class pictures when they are added (os2d.exemplar): warnings in the library, the CLI and the service."""

from __future__ import annotations

import io
import warnings

import pytest
from helpers import scene_with, textured_object
from PIL import Image, ImageFilter

from os2d.apps.cli.main import main
from os2d.detector import Detector
from os2d.exemplar import DUPLICATE_SIMILARITY, image_warnings, sharpness_ratio


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return textured_object((160, 192), seed=4)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.from_weights("default")


def kinds(ws) -> list[str]:
    return [w.kind for w in ws]


def test_a_good_picture_has_no_warning(picture):
    assert image_warnings(picture) == []


def test_small_blurred_and_background_pictures_are_named(picture):
    assert kinds(image_warnings(picture.resize((48, 40)))) == ["small", "blurred"]  # 48x40 is upscaled 5.5x
    blurred = picture.filter(ImageFilter.GaussianBlur(4))
    assert kinds(image_warnings(blurred)) == ["blurred"]
    assert sharpness_ratio(blurred) > 2 * sharpness_ratio(picture)
    plain = Image.new("RGB", (900, 900), (250, 250, 250))
    plain.paste(picture.resize((80, 96)), (400, 400))  # the object covers 1% of the picture
    ws = image_warnings(plain)
    assert kinds(ws) == ["background"] and "crop it" in ws[0].message


def test_add_class_returns_warnings_and_names_the_look_alike(detector, picture):
    d = Detector(detector.model, detector.config)
    assert d.add_class("cereal", picture) == []
    # another product with another layout (the same layout in other colours is a look-alike: similarity 0.83-0.86)
    assert d.add_class("other", textured_object(seed=11).transpose(Image.Transpose.TRANSPOSE)) == []
    ws = d.add_class("cereal-copy", picture.resize((150, 180)))  # the same product, another picture
    assert kinds(ws) == ["duplicate"] and "'cereal'" in ws[0].message
    assert f">= {DUPLICATE_SIMILARITY}" in ws[0].message
    ws = d.add_class("cereal", picture.rotate(3))  # another picture of a class is never compared with the class
    assert [w.message.split("'")[1] for w in ws] == ["cereal-copy"]
    assert d.classes == ["cereal", "other", "cereal-copy"]  # warnings never refuse


def test_cli_prints_one_warning_line_per_problem_and_still_detects(tmp_path, picture, capsys):
    picture.resize((48, 40)).save(tmp_path / "tiny.png")
    scene_with(picture, [(60, 40)]).save(tmp_path / "scene.jpg")
    rc = main(["detect", str(tmp_path / "scene.jpg"), "--class", f"tiny={tmp_path / 'tiny.png'}",
               "-o", str(tmp_path / "out.json"), "--image-size", "0", "-q"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 0 and (tmp_path / "out.json").is_file()
    assert [ln for ln in err if ln.startswith("os2d: warning: class 'tiny': ")] == err and len(err) == 2
    assert "upscaled" in err[0] and "blurred" in err[1]


def test_service_returns_the_warnings_of_an_added_class(tmp_path, picture):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from os2d.apps.service.app import ServiceSettings, create_app

    def png(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    with TestClient(create_app(ServiceSettings(data_dir=tmp_path))) as c:
        ok = c.post("/api/v1/classes", data={"name": "cereal"}, files={"image": ("c.png", png(picture), "image/png")})
        assert ok.status_code == 201 and ok.json()["warnings"] == []
        blurred = picture.filter(ImageFilter.GaussianBlur(4))
        r = c.post("/api/v1/classes", data={"name": "soft"}, files={"image": ("b.png", png(blurred), "image/png")})
        assert r.status_code == 201
        assert [w["kind"] for w in r.json()["warnings"]] == ["blurred"]
        assert [x["name"] for x in c.get("/api/v1/classes").json()["classes"]] == ["cereal", "soft"]
