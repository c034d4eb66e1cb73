"""Persistent class gallery of the service: class images on disk, an SQLite index, a kernel cache.

Layout of the data directory::

    gallery.sqlite3          classes(name PRIMARY KEY, created), class_images(id, class_name, file, created,
                             negative): a class's pictures, and its negative exemplars (negative = 1)
    images/<uuid>.png        class images (written atomically before their row is committed)
    training/, finetune/     training photos and fine-tune runs: tables in the same database, see
                             :mod:`os2d.apps.service.training`
    kernels-<model_id>.pt    the ClassGallery computed by model ``model_id`` from the stored images, with the
                             image ids of each class (a cache, rewritten atomically after every change; a
                             class whose ids no longer match is encoded again, the others are reused)
    .lock                    held (flock) by the process that has the store open

Crash safety: an image file is written (temp + fsync + rename) before its row is committed in one
transaction, so a crash leaves at worst an orphan file. On open, rows whose file is missing are dropped, and
so are classes left without images; the temporary files of interrupted writes are deleted (orphan image
files are kept). One process at a time: the store holds an exclusive lock on ``.lock`` while open.

A store that cannot be used (not a folder, not writable, a corrupt or foreign ``gallery.sqlite3``, in use by
another process) raises :class:`StoreError` with what to do; a corrupt database is never replaced.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from os2d.errors import Os2dError
from os2d.files import atomic_torch_save, atomic_write
from os2d.gallery import ClassGallery
from os2d.weights import WeightsError, read_weights_file

logger = logging.getLogger(__name__)

KERNEL_CACHE_FORMAT = "os2d-service-kernels"
KERNEL_CACHE_VERSION = 3  # 2: the gallery as ClassGallery.to_payload() under "gallery"; 3: with aspect ratios

_SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS class_images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class_name TEXT NOT NULL REFERENCES classes(name) ON DELETE CASCADE,
    file TEXT NOT NULL,
    created REAL NOT NULL,
    negative INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS class_images_by_class ON class_images(class_name, id);
"""
_SCHEMA_CHECK = ("SELECT name, created FROM classes LIMIT 0",
                 "SELECT id, class_name, file, created, negative FROM class_images LIMIT 0")
TEMP_GLOB = ".*.tmp"  # the temporary files of os2d.files.atomic_write


class StoreError(Os2dError):
    """The data directory cannot be used as a gallery store; the message says why and what to do."""


@dataclass(frozen=True)
class ClassRecord:
    name: str
    created: float
    num_images: int
    num_negatives: int = 0

    @property
    def created_iso(self) -> str:
        return datetime.fromtimestamp(self.created, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    class_name: str
    path: Path
    negative: bool = False


class GalleryStore:
    """Class images and their SQLite index in ``data_dir``; all methods are thread-safe."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.images_dir = self.data_dir / "images"
        self.db_path = self.data_dir / "gallery.sqlite3"
        self._lock = threading.RLock()
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._lock_data_dir()
        except OSError as e:
            raise StoreError(f"{e.filename or self.data_dir}: {e.strerror or e}; the data dir must be a writable "
                             "folder (class images go to its images/ folder): fix it or choose another one") from e
        try:
            self._db = self._open_db()
            self.recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _lock_data_dir(self) -> int:
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"data dir {self.data_dir} is in use by another os2d service; stop it or choose "
                             "another data dir") from None
        return fd

    def _open_db(self) -> sqlite3.Connection:
        """The connection, after checking that the file is an intact os2d gallery database (never replaced)."""
        db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(class_images)")}
            if "negative" not in columns:  # a store made before negative exemplars: every image is a picture
                db.execute("ALTER TABLE class_images ADD COLUMN negative INTEGER NOT NULL DEFAULT 0")
            for query in _SCHEMA_CHECK:
                db.execute(query)
        except sqlite3.DatabaseError as e:
            db.close()
            if isinstance(e, sqlite3.OperationalError) and ("readonly" in str(e) or "unable to open" in str(e)):
                raise StoreError(f"{self.db_path} cannot be written ({e}): make the data dir writable or choose "
                                 "another one") from e
            raise StoreError(f"{self.db_path} is not a usable os2d gallery database ({e}). It was left as it is: "
                             "move it away to start with an empty gallery, or restore it from a backup") from e
        return db

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection (other tables of the data dir share it: :mod:`os2d.apps.service.training`);
        use it under :attr:`lock`."""
        return self._db

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # ------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            if self._lock_fd < 0:
                return
            try:
                self._db.close()
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def recover(self) -> list[int]:
        """Drop rows whose image file is missing and classes left without images, delete the temporary files of
        interrupted writes; return the dropped ids. Orphan image files (written, never committed) are left:
        with a database moved away, they are what a user restores from."""
        with self._lock:
            rows = self._db.execute("SELECT id, file FROM class_images").fetchall()
            missing = [i for i, f in rows if not (self.images_dir / f).is_file()]
            stale = [p for d in (self.data_dir, self.images_dir) for p in d.glob(TEMP_GLOB)]
            for p in stale:  # under the data dir lock: nobody else is writing them
                p.unlink(missing_ok=True)
            if stale:
                logger.warning("gallery store: deleted %d temporary files of interrupted writes", len(stale))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM class_images WHERE id = ?", [(i,) for i in missing])
                self._db.execute("DELETE FROM classes WHERE name NOT IN "  # negatives go with them (cascade)
                                 "(SELECT class_name FROM class_images WHERE negative = 0)")
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
                "SELECT c.name, c.created, COUNT(i.id) - TOTAL(i.negative), TOTAL(i.negative) FROM classes c "
                "LEFT JOIN class_images i ON i.class_name = c.name GROUP BY c.name ORDER BY c.rowid").fetchall()
        return [ClassRecord(n, float(t), int(k), int(neg)) for n, t, k, neg in rows]

    def get_class(self, name: str) -> ClassRecord | None:
        return next((c for c in self.classes() if c.name == name), None)

    def images(self, name: str | None = None) -> list[ImageRecord]:
        """Image records of one class (or all), in insertion order."""
        with self._lock:
            if name is None:
                rows = self._db.execute(
                    "SELECT i.id, i.class_name, i.file, i.negative FROM class_images i JOIN classes c "
                    "ON c.name = i.class_name ORDER BY c.rowid, i.id").fetchall()
            else:
                rows = self._db.execute("SELECT id, class_name, file, negative FROM class_images WHERE class_name = ? "
                                        "ORDER BY id", (name,)).fetchall()
        return [ImageRecord(int(i), n, self.images_dir / f, bool(neg)) for i, n, f, neg in rows]

    def image_ids(self) -> dict[str, list[int]]:
        """class name -> its image ids, negatives too (the identity of the gallery's content, for the kernel
        cache)."""
        out: dict[str, list[int]] = {c.name: [] for c in self.classes()}
        for rec in self.images():
            out[rec.class_name].append(rec.id)
        return out

    # ------------------------------------------------------------------------------------ mutations

    def add_image(self, name: str, image: Image.Image, *, negative: bool = False) -> ImageRecord:
        """Write ``image`` as PNG atomically, then commit its row (and the class row if new; a negative exemplar
        needs its class: ``KeyError`` otherwise)."""
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        file = f"{uuid.uuid4().hex}.png"
        atomic_write(self.images_dir / file, lambda f: f.write(data))
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if negative:
                    if self._db.execute("SELECT 1 FROM classes WHERE name = ?", (name,)).fetchone() is None:
                        raise KeyError(f"no class named {name!r}")
                else:
                    self._db.execute("INSERT OR IGNORE INTO classes(name, created) VALUES (?, ?)", (name, now))
                cur = self._db.execute("INSERT INTO class_images(class_name, file, created, negative) "
                                       "VALUES (?, ?, ?, ?)", (name, file, now, int(negative)))
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

    def load_kernel_cache(self, model_id: str) -> tuple[ClassGallery, dict[str, list[int]]] | None:
        """The cached gallery of ``model_id`` and, per class, the ids of the images it was computed from; None if
        there is no usable cache. Classes whose ids differ from :meth:`image_ids` are stale (a crash between a
        commit and the cache write): the caller encodes those again, only those."""
        path = self.kernel_cache_path(model_id)
        if not path.is_file():
            return None
        try:
            d = read_weights_file(path)
        except WeightsError as e:  # a corrupt cache is only a cache
            logger.warning("kernel cache %s unreadable (%s): recomputing", path, e)
            return None
        if (not isinstance(d, dict) or d.get("format") != KERNEL_CACHE_FORMAT
                or d.get("version") != KERNEL_CACHE_VERSION or d.get("model_id") != model_id
                or not isinstance(d.get("image_ids"), dict)):
            logger.warning("kernel cache %s is stale or of another model: recomputing", path)
            return None
        try:
            gallery = ClassGallery.from_payload(d.get("gallery"), source=str(path))
        except ValueError as e:
            logger.warning("kernel cache %s: %s: recomputing", path, e)
            return None
        return (gallery, d["image_ids"]) if gallery.model_id == model_id else None

    def save_kernel_cache(self, gallery: ClassGallery) -> None:
        """Cache ``gallery`` (computed from the images stored now) for its model."""
        payload = {"format": KERNEL_CACHE_FORMAT, "version": KERNEL_CACHE_VERSION, "model_id": gallery.model_id,
                   "image_ids": self.image_ids(), "gallery": gallery.to_payload()}
        atomic_torch_save(self.kernel_cache_path(gallery.model_id), payload)
