"""Persistent class gallery of the service: class images on disk, an SQLite index, a kernel cache.

Layout of the data directory::

    gallery.sqlite3          classes(name PRIMARY KEY, created), class_images(id, class_name, file, created)
    images/<uuid>.png        class images (written atomically before their row is committed)
    kernels-<model_id>.pt    the ClassGallery computed by model ``model_id`` from the stored images (a cache;
                             rebuilt when stale)

Crash safety: an image file is written (temp + fsync + rename) before its row is committed in one
transaction, so a crash leaves at worst an orphan file (ignored). On open, rows whose file is missing
are dropped, and so are classes left without images.
"""

from __future__ import annotations

import io
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from os2d.files import atomic_torch_save, atomic_write
from os2d.gallery import ClassGallery

logger = logging.getLogger(__name__)

KERNEL_CACHE_FORMAT = "os2d-service-kernels"
KERNEL_CACHE_VERSION = 2  # 2: the gallery as ClassGallery.to_payload() under "gallery"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS class_images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class_name TEXT NOT NULL REFERENCES classes(name) ON DELETE CASCADE,
    file TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS class_images_by_class ON class_images(class_name, id);
"""


@dataclass(frozen=True)
class ClassRecord:
    name: str
    created: float
    num_images: int

    @property
    def created_iso(self) -> str:
        return datetime.fromtimestamp(self.created, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    class_name: str
    path: Path


class GalleryStore:
    """Class images and their SQLite index in ``data_dir``; all methods are thread-safe."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "gallery.sqlite3"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self.recover()

    # ------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover - closing twice
                pass

    def recover(self) -> list[int]:
        """Drop rows whose image file is missing and classes left without images; return dropped ids."""
        with self._lock:
            rows = self._db.execute("SELECT id, file FROM class_images").fetchall()
            missing = [i for i, f in rows if not (self.images_dir / f).is_file()]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM class_images WHERE id = ?", [(i,) for i in missing])
                self._db.execute("DELETE FROM classes WHERE name NOT IN (SELECT class_name FROM class_images)")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if missing:
                logger.warning("gallery store: dropped %d class image rows whose file is missing", len(missing))
            return missing

    # -------------------------------------------------------------------------------------- queries

    def classes(self) -> list[ClassRecord]:
        """All classes in creation order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.name, c.created, COUNT(i.id) FROM classes c LEFT JOIN class_images i "
                "ON i.class_name = c.name GROUP BY c.name ORDER BY c.rowid").fetchall()
        return [ClassRecord(n, float(t), int(k)) for n, t, k in rows]

    def get_class(self, name: str) -> ClassRecord | None:
        return next((c for c in self.classes() if c.name == name), None)

    def images(self, name: str | None = None) -> list[ImageRecord]:
        """Image records of one class (or all), in insertion order."""
        with self._lock:
            if name is None:
                rows = self._db.execute(
                    "SELECT i.id, i.class_name, i.file FROM class_images i JOIN classes c ON c.name = i.class_name "
                    "ORDER BY c.rowid, i.id").fetchall()
            else:
                rows = self._db.execute("SELECT id, class_name, file FROM class_images WHERE class_name = ? "
                                        "ORDER BY id", (name,)).fetchall()
        return [ImageRecord(int(i), n, self.images_dir / f) for i, n, f in rows]

    def image_ids(self) -> dict[str, list[int]]:
        """class name -> its image ids (the identity of the gallery's content, for the kernel cache)."""
        out: dict[str, list[int]] = {c.name: [] for c in self.classes()}
        for rec in self.images():
            out[rec.class_name].append(rec.id)
        return out

    # ------------------------------------------------------------------------------------ mutations

    def add_image(self, name: str, image: Image.Image) -> ImageRecord:
        """Write ``image`` as PNG atomically, then commit its row (and the class row if new)."""
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        file = f"{uuid.uuid4().hex}.png"
        atomic_write(self.images_dir / file, lambda f: f.write(data))
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR IGNORE INTO classes(name, created) VALUES (?, ?)", (name, now))
                cur = self._db.execute("INSERT INTO class_images(class_name, file, created) VALUES (?, ?, ?)",
                                       (name, file, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                (self.images_dir / file).unlink(missing_ok=True)
                raise
        return ImageRecord(int(cur.lastrowid), name, self.images_dir / file)

    def delete_class(self, name: str) -> bool:
        """Delete a class and its images; False if there was no such class."""
        with self._lock:
            files = [r.path for r in self.images(name)]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM class_images WHERE class_name = ?", (name,))
                cur = self._db.execute("DELETE FROM classes WHERE name = ?", (name,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for p in files:  # after the commit: a crash here leaves orphan files only
            p.unlink(missing_ok=True)
        return cur.rowcount > 0

    # --------------------------------------------------------------------------------- kernel cache

    def kernel_cache_path(self, model_id: str) -> Path:
        return self.data_dir / f"kernels-{model_id}.pt"

    def load_kernel_cache(self, model_id: str) -> ClassGallery | None:
        """The cached gallery of ``model_id`` if it was computed from exactly the stored images, else None."""
        path = self.kernel_cache_path(model_id)
        if not path.is_file():
            return None
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a corrupt cache is only a cache
            logger.warning("kernel cache %s unreadable (%s): recomputing", path, e)
            return None
        if (not isinstance(d, dict) or d.get("format") != KERNEL_CACHE_FORMAT
                or d.get("version") != KERNEL_CACHE_VERSION or d.get("model_id") != model_id):
            logger.warning("kernel cache %s is stale or of another model: recomputing", path)
            return None
        if d.get("image_ids") != self.image_ids():
            logger.info("kernel cache %s does not match the stored class images: recomputing", path)
            return None
        try:
            gallery = ClassGallery.from_payload(d.get("gallery"), source=str(path))
        except ValueError as e:
            logger.warning("kernel cache %s: %s: recomputing", path, e)
            return None
        return gallery if gallery.model_id == model_id else None

    def save_kernel_cache(self, gallery: ClassGallery) -> None:
        """Cache ``gallery`` (computed from the images stored now) for its model."""
        payload = {"format": KERNEL_CACHE_FORMAT, "version": KERNEL_CACHE_VERSION, "model_id": gallery.model_id,
                   "image_ids": self.image_ids(), "gallery": gallery.to_payload()}
        atomic_torch_save(self.kernel_cache_path(gallery.model_id), payload)
