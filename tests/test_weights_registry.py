"""Weights registry: entries, cache/offline directories, name resolution, downloads (against a local HTTP
server, including Google Drive's confirm-token page) and the ``os2d weights`` CLI."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from os2d.apps.cli.main import main
from os2d.config import ModelConfig
from os2d.weights import WeightsError, load_model, save_checkpoint
from os2d.weights import download as dl
from os2d.weights import registry as reg

PAYLOAD = b"PK\x03\x04" + bytes(range(256)) * 40  # looks like a zip (torch.save) file, not like HTML


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own cache and no offline folder."""
    monkeypatch.setenv(reg.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.delenv(reg.ENV_WEIGHTS_DIR, raising=False)


# ------------------------------------------------------------------------------------------------------------
# registry content


def test_entries_are_complete_and_honest():
    kinds = {name: e.kind for name, e in reg.REGISTRY.items()}
    assert {n for n, k in kinds.items() if k == "builtin"} == {"efficientnet_lite0-imagenet",
                                                               "efficientnet_lite2-imagenet"}
    assert {n for n, k in kinds.items() if k == "packaged"} == {reg.DEFAULT_WEIGHTS} == {"os2d-lite0-v2"}
    for name, e in reg.REGISTRY.items():
        assert e.name == name and e.licence and e.description and e.origin
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        if e.kind == "builtin":
            assert e.filename is None and e.download_url is None
        elif e.kind == "packaged":
            assert e.filename and e.download_url is None and e.format == "os2d"
        else:
            assert e.filename and e.download_url and e.format in ("official", "torchvision", "caffe2", "cirtorch",
                                                                  "weakalign")
        if e.sha256_prefix:  # torch.hub convention: the file name carries the hash prefix
            assert e.sha256_prefix in e.filename
    assert reg.REGISTRY["os2d_v2-train"].gdrive_id == "1l_aanrxHj14d_QkCpein8wFmainNAzo8"
    assert reg.REGISTRY["os2d_v1-train"].gdrive_id == "1ByDRHMt1x5Ghvy7YTYmQjmus9bQkvJ8g"
    assert reg.REGISTRY["os2d_v2-init"].gdrive_id == "1sr9UX45kiEcmBeKHdlX7rZTSA4Mgt0A7"
    assert (reg.REGISTRY["os2d_v2-train"].config.backbone, reg.REGISTRY["os2d_v2-train"].config.variant) == (
        "resnet50", "v2")
    assert (reg.REGISTRY["os2d_v1-train"].config.backbone, reg.REGISTRY["os2d_v1-train"].config.variant) == (
        "resnet101", "v1")
    assert reg.get_entry("os2d_v2-train.pth") is reg.REGISTRY["os2d_v2-train"]


def test_cli_format_list_matches_converter():
    from os2d.apps.cli.weights import FORMATS as CLI_FORMATS
    from os2d.weights.convert import FORMATS

    assert CLI_FORMATS == FORMATS


# ------------------------------------------------------------------------------------------------------------
# directories and resolution


def test_cache_dir_environment(tmp_path, monkeypatch):
    assert reg.cache_dir() == tmp_path / "home"
    assert reg.weights_cache_dir() == tmp_path / "home" / "weights"
    monkeypatch.delenv(reg.ENV_HOME)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert reg.cache_dir() == tmp_path / "xdg" / "os2d"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert reg.cache_dir() == Path.home() / ".cache" / "os2d"


def test_offline_dir_is_searched_first(tmp_path, monkeypatch):
    offline = tmp_path / "offline"
    offline.mkdir()
    cache = reg.weights_cache_dir()
    cache.mkdir(parents=True)
    (cache / "resnet50-19c8e357.pth").write_bytes(b"x")
    assert reg.resolve("resnet50-torchvision").path == cache / "resnet50-19c8e357.pth"
    monkeypatch.setenv(reg.ENV_WEIGHTS_DIR, str(offline))
    (offline / "resnet50-19c8e357.pth").write_bytes(b"x")
    assert reg.resolve("resnet50-torchvision").path == offline / "resnet50-19c8e357.pth"
    assert reg.resolve("os2d_v2-train") is None
    assert reg.resolve("efficientnet_lite0-imagenet") is None  # builtin: no file


def test_packaged_names_resolve_in_the_package_only(tmp_path, monkeypatch):
    monkeypatch.setattr(reg, "ASSETS_DIR", tmp_path / "assets")
    cache = reg.weights_cache_dir()
    cache.mkdir(parents=True)
    (cache / "os2d_lite0_v2.pt").write_bytes(b"x")  # never looked for outside the package
    assert reg.resolve("os2d-lite0-v2") is None
    with pytest.raises(WeightsError, match=r"packaged weights 'os2d-lite0-v2' are missing from this installation"):
        reg.packaged_weights_path("os2d-lite0-v2")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "os2d_lite0_v2.pt").write_bytes(b"x")
    assert reg.resolve("os2d-lite0-v2").path == tmp_path / "assets" / "os2d_lite0_v2.pt"
    with pytest.raises(ValueError, match="not packaged"):
        reg.packaged_weights_path("os2d_v2-train")


def test_load_model_resolves_registry_and_imported_names(tmp_path, monkeypatch):
    from test_weights_convert import official_layout

    offline = tmp_path / "offline"
    offline.mkdir()
    monkeypatch.setenv(reg.ENV_WEIGHTS_DIR, str(offline))
    with pytest.raises(WeightsError, match=r"os2d weights download os2d_v2-train"):
        load_model("os2d_v2-train")
    with pytest.raises(WeightsError, match=r"unknown weights 'no-such-model'.*os2d_v2-train"):
        load_model("no-such-model")

    torch.manual_seed(0)
    model = load_model("efficientnet_lite0-imagenet")  # builtin, no file
    from os2d.model.os2d import build_os2d

    r50 = build_os2d(ModelConfig.v2("resnet50"))
    torch.save(official_layout(r50), offline / "os2d_v2-train.pth")
    loaded = load_model("os2d_v2-train")
    assert (loaded.config.backbone, loaded.config.variant) == ("resnet50", "v2")
    torch.testing.assert_close(loaded.transform_net.linear.bias, r50.transform_net.linear.bias)
    with pytest.raises(WeightsError, match="holds resnet50 V2 weights, expected resnet101 V1"):
        load_model("os2d_v2-train", expect=ModelConfig.v1("resnet101"))

    save_checkpoint(reg.weights_cache_dir() / "my-model.pth", model)  # as `os2d weights import --name my-model`
    assert load_model("my-model").config == model.config


# ------------------------------------------------------------------------------------------------------------
# downloads against a local server


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _send(self, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        port = self.server.server_address[1]
        if url.path == "/file.pth":
            self._send(PAYLOAD, "application/octet-stream")
        elif url.path == "/login":
            self._send(b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html; charset=utf-8")
        elif url.path == "/uc" and q.get("id") == "BIG":  # Google Drive's virus-scan warning page (form flow)
            page = (f'<!DOCTYPE html><html><body>Google Drive can\'t scan this file for viruses.'
                    f'<form id="download-form" action="http://127.0.0.1:{port}/download" method="get">'
                    f'<input type="submit" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="BIG"><input type="hidden" name="export" value="download">'
                    f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">'
                    f"</form></body></html>")
            self._send(page.encode(), "text/html; charset=utf-8")
        elif url.path == "/uc" and q.get("id") == "OLD":  # older flow: cookie + confirm=TOKEN link
            page = '<html><a href="/uc?export=download&amp;confirm=AbC_9&amp;id=OLD">Download anyway</a></html>'
            if q.get("confirm") == "AbC_9":
                self._send(PAYLOAD, "application/octet-stream")
            else:
                self._send(page.encode(), "text/html", {"Set-Cookie": "download_warning_1=AbC_9; Path=/"})
        elif url.path == "/uc" and q.get("id") == "SMALL":
            self._send(PAYLOAD, "application/octet-stream")
        elif url.path == "/uc":  # quota exceeded page: no token
            self._send(b"<html><body>Too many users have viewed or downloaded this file</body></html>", "text/html")
        elif url.path == "/download" and q == {"id": "BIG", "export": "download", "confirm": "t", "uuid": "u-1"}:
            self._send(PAYLOAD, "application/octet-stream")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _entry(**changes) -> reg.WeightsEntry:
    fields = {"name": "test-weights", "filename": "test-weights.pth", "sha256_prefix": None, **changes}
    return replace(reg.REGISTRY["resnet50-torchvision"], **fields)


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_with_hash_check_and_atomic_rename(server, tmp_path):
    dest = tmp_path / "dl"
    path = dl.download("x", entry=_entry(url=f"{server}/file.pth", sha256=SHA), dest_dir=dest, progress=False)
    assert path == dest / "test-weights.pth" and path.read_bytes() == PAYLOAD
    assert dl.download("x", entry=_entry(url=f"{server}/nothing", sha256=SHA), dest_dir=dest) == path  # present
    with pytest.raises(WeightsError, match="does not match the expected"):
        dl.download("x", entry=_entry(url=f"{server}/file.pth", sha256="0" * 64), dest_dir=tmp_path / "bad",
                     progress=False)
    with pytest.raises(WeightsError, match="does not start with"):
        dl.download("x", entry=_entry(url=f"{server}/file.pth", sha256_prefix="deadbeef"),
                     dest_dir=tmp_path / "bad", progress=False)
    assert list((tmp_path / "bad").iterdir()) == []  # no partial or unverified file left behind


def test_download_file_url_and_errors(server, tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(PAYLOAD)
    path = dl.download("x", entry=_entry(url=src.as_uri(), sha256=SHA), dest_dir=tmp_path / "a", progress=False)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(WeightsError, match=r"web page instead of the file.*os2d weights import PATH"):
        dl.download("x", entry=_entry(url=f"{server}/login"), dest_dir=tmp_path / "b", progress=False)
    with pytest.raises(WeightsError, match=r"failed.*(404|Not Found)"):
        dl.download("x", entry=_entry(url=f"{server}/missing.pth"), dest_dir=tmp_path / "b", progress=False)
    with pytest.raises(WeightsError, match="built in"):
        dl.download("efficientnet_lite0-imagenet")
    with pytest.raises(WeightsError, match="unknown weights"):
        dl.download("no-such-weights")
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize("gdrive_id", ["SMALL", "BIG", "OLD"])
def test_google_drive_confirm_token(server, tmp_path, monkeypatch, gdrive_id):
    monkeypatch.setattr(reg, "GDRIVE_URL", server + "/uc?export=download&id={id}")
    entry = _entry(url=None, gdrive_id=gdrive_id)
    path = dl.download("x", entry=entry, dest_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_google_drive_without_token_gives_manual_instructions(server, tmp_path, monkeypatch):
    monkeypatch.setattr(reg, "GDRIVE_URL", server + "/uc?export=download&id={id}")
    entry = _entry(url=None, gdrive_id="QUOTA")
    with pytest.raises(WeightsError, match=r"drive\.google\.com/open\?id=QUOTA.*os2d weights import PATH --name "
                                           r"test-weights"):
        dl.download("x", entry=entry, dest_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_list(capsys, tmp_path):
    cache = reg.weights_cache_dir()
    cache.mkdir(parents=True)
    (cache / "os2d_v2-train.pth").write_bytes(b"x" * 2000)
    (cache / "my-own.pth").write_bytes(b"x")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and line.split()[0] in reg.REGISTRY
            or line.startswith("my-own")}
    assert rows["os2d_v2-train"] == "present" and rows["os2d_v1-train"] == "missing"
    assert rows["efficientnet_lite0-imagenet"] == "builtin" and rows["my-own"] == "imported"
    assert rows["os2d-lite0-v2"] == "packaged" and "packaged (default)" in out
    assert "MIT" in out and str(cache) in out


def test_cli_import_and_use(capsys, tmp_path):
    from test_weights_convert import torchvision_layout

    from os2d.model.os2d import build_os2d

    torch.manual_seed(0)
    r50 = build_os2d(ModelConfig.v2("resnet50"))
    src = tmp_path / "resnet50-19c8e357.pth"
    torch.save(torchvision_layout(r50.backbone.state_dict()), src)
    assert main(["weights", "import", str(src)]) == 0
    out = capsys.readouterr().out
    assert "torchvision ResNet -> resnet50, V2" in out and "10,169,478" in out and "resnet50-torchvision" in out
    model = load_model("resnet50-torchvision")  # registry name -> the imported checkpoint
    torch.testing.assert_close(model.backbone.layer3[5].conv3.weight, r50.backbone.layer3[5].conv3.weight)
    # same name again needs --force; a V1 head on request; a wrong expectation fails cleanly
    assert main(["weights", "import", str(src)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["weights", "import", str(src), "--name", "r50-v1", "--variant", "v1"]) == 0
    assert load_model("r50-v1").config.variant == "v1"
    assert main(["weights", "import", str(src), "--name", "x", "--backbone", "resnet101"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("os2d: error:") and "holds resnet50 trunk weights, expected resnet101" in err and "Traceback" not in err


def test_cli_errors_are_messages(capsys, tmp_path):
    from test_weights_convert import _Exploit

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"net": _Exploit(marker)}, evil)
    assert main(["weights", "import", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("os2d: error:") and "needs unsafe pickled objects" in err and not marker.exists()
    assert main(["weights", "import", str(tmp_path / "absent.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["weights", "download", "no-such-weights"]) == 2
    assert "unknown weights" in capsys.readouterr().err
    assert main(["weights", "import", str(evil), "--name", "bad name!"]) == 2
    assert "--name" in capsys.readouterr().err
