"""The service's fine-tuning data: annotated training photos, fine-tune jobs and the active fine-tuned model.

Tables in the gallery database (:class:`os2d.apps.service.store.GalleryStore`, same connection and lock)::

    training_photos(id, file, width, height, created)      photos under training/<uuid>.<ext>, bytes as uploaded
    training_boxes(id, photo_id, class_name, x1, y1, x2, y2)  boxes in photo pixels; a box goes with its photo
                                                           and with its gallery class (ON DELETE CASCADE)
    finetune_jobs(id, created, state, steps, base_weights, run_dir, num_photos, num_boxes, started, ended,
                  result, error)                           one ``os2d finetune`` run each (result: JSON)
    service_state(key, value)                              ``active_weights`` / ``active_job`` / ``active_base``

Crash safety as for class images: a photo file is written atomically before its rows are committed in one
transaction; on open, rows whose file is missing are dropped, and jobs left ``running`` by a service that
stopped are marked ``interrupted`` (resumable: the run folder keeps its checkpoints).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from os2d.files import atomic_write

JOB_STATES = ("running", "done", "failed", "interrupted", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS training_photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS training_boxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo_id INTEGER NOT NULL REFERENCES training_photos(id) ON DELETE CASCADE,
    class_name TEXT NOT NULL REFERENCES classes(name) ON DELETE CASCADE,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS training_boxes_by_photo ON training_boxes(photo_id, id);
CREATE TABLE IF NOT EXISTS finetune_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    steps INTEGER NOT NULL,
    base_weights TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    num_photos INTEGER NOT NULL,
    num_boxes INTEGER NOT NULL,
    started REAL,
    ended REAL,
    result TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS service_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TrainingBox:
    class_name: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in photo pixels

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_name, "box": [round(v, 2) for v in self.box]}


@dataclass(frozen=True)
class TrainingPhoto:
    id: int
    path: Path
    width: int
    height: int
    created: float
    boxes: tuple[TrainingBox, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "width": self.width, "height": self.height, "created": iso(self.created),
                "boxes": [b.to_dict() for b in self.boxes], "image_url": f"/api/v1/training/photos/{self.id}/image"}


@dataclass(frozen=True)
class Job:
    id: int
    created: float
    state: str
    steps: int
    base_weights: str
    run_dir: Path
    num_photos: int
    num_boxes: int
    started: float | None
    ended: float | None
    result: dict[str, Any] | None
    error: str | None


class TrainingStore:
    """Training photos, their boxes, fine-tune jobs and the service's state, in the gallery database."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, data_dir: Path) -> None:
        self._db = db
        self._lock = lock
        self.photos_dir = Path(data_dir) / "training"
        self.runs_dir = Path(data_dir) / "finetune"
        self.photos_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._db.executescript(_SCHEMA)
        self.recover()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def recover(self) -> None:
        """Drop photos whose file is missing; mark jobs a stopped service left running as interrupted."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, file FROM training_photos").fetchall()
            missing = [(i,) for i, f in rows if not (self.photos_dir / f).is_file()]
            db.executemany("DELETE FROM training_photos WHERE id = ?", missing)
            db.execute("UPDATE finetune_jobs SET state = 'interrupted', ended = ? WHERE state = 'running'",
                       (time.time(),))

    # ------------------------------------------------------------------------------------ photos

    def add_photo(self, data: bytes, suffix: str, size: tuple[int, int], boxes: Sequence[TrainingBox]) -> TrainingPhoto:
        """Store the photo's bytes as uploaded and its boxes (their classes must exist: ``KeyError`` otherwise)."""
        file = f"{uuid.uuid4().hex}{suffix}"
        path = self.photos_dir / file
        atomic_write(path, lambda f: f.write(data))
        now = time.time()
        try:
            with self._transaction() as db:
                known = {r[0] for r in db.execute("SELECT name FROM classes")}
                missing = sorted({b.class_name for b in boxes} - known)
                if missing:
                    raise KeyError(f"unknown class(es): {', '.join(missing)}")
                cur = db.execute("INSERT INTO training_photos(file, width, height, created) VALUES (?, ?, ?, ?)",
                                 (file, size[0], size[1], now))
                photo_id = int(cur.lastrowid)
                db.executemany("INSERT INTO training_boxes(photo_id, class_name, x1, y1, x2, y2) "
                               "VALUES (?, ?, ?, ?, ?, ?)", [(photo_id, b.class_name, *b.box) for b in boxes])
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return TrainingPhoto(photo_id, path, size[0], size[1], now, tuple(boxes))

    def photos(self) -> list[TrainingPhoto]:
        """Every training photo with its boxes (boxes of deleted classes are gone), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, file, width, height, created FROM training_photos ORDER BY id").fetchall()
            box_rows = self._db.execute("SELECT photo_id, class_name, x1, y1, x2, y2 FROM training_boxes "
                                        "ORDER BY photo_id, id").fetchall()
        boxes: dict[int, list[TrainingBox]] = {}
        for pid, name, *xyxy in box_rows:
            boxes.setdefault(int(pid), []).append(TrainingBox(name, tuple(float(v) for v in xyxy)))  # type: ignore[arg-type]
        return [TrainingPhoto(int(i), self.photos_dir / f, int(w), int(h), float(t), tuple(boxes.get(int(i), [])))
                for i, f, w, h, t in rows]

    def photo(self, photo_id: int) -> TrainingPhoto | None:
        return next((p for p in self.photos() if p.id == photo_id), None)

    def delete_photo(self, photo_id: int) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT file FROM training_photos WHERE id = ?", (photo_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM training_photos WHERE id = ?", (photo_id,))
        (self.photos_dir / row[0]).unlink(missing_ok=True)
        return True

    def summary(self) -> dict[str, Any]:
        """Photos with boxes, boxes, and boxes per class."""
        per_class: dict[str, int] = {}
        photos = self.photos()
        for p in photos:
            for b in p.boxes:
                per_class[b.class_name] = per_class.get(b.class_name, 0) + 1
        return {"num_photos": sum(1 for p in photos if p.boxes), "num_boxes": sum(per_class.values()),
                "boxes_per_class": per_class}

    def write_dataset(self, folder: Path, class_images: dict[str, list[Path]]) -> tuple[Path, Path, int, int]:
        """``boxes.csv`` (absolute paths) and ``classes.csv`` (a row per stored picture of each class with boxes)
        in ``folder``, for ``os2d finetune``; returns the two paths, the photos and the boxes written."""
        photos = [p for p in self.photos() if p.boxes]
        used = sorted({b.class_name for p in photos for b in p.boxes})
        boxes = io.StringIO()
        w = csv.writer(boxes, lineterminator="\n")
        w.writerow(["image", "class", "x1", "y1", "x2", "y2"])
        for p in photos:
            for b in p.boxes:
                w.writerow([str(p.path.absolute()), b.class_name, *(f"{v:.2f}" for v in b.box)])
        classes = io.StringIO()
        w = csv.writer(classes, lineterminator="\n")
        w.writerow(["name", "path"])
        for name in used:
            for path in class_images.get(name, []):
                w.writerow([name, str(Path(path).absolute())])
        folder.mkdir(parents=True, exist_ok=True)
        boxes_path, classes_path = folder / "boxes.csv", folder / "classes.csv"
        atomic_write(boxes_path, lambda f: f.write(boxes.getvalue().encode()))
        atomic_write(classes_path, lambda f: f.write(classes.getvalue().encode()))
        return boxes_path, classes_path, len(photos), sum(len(p.boxes) for p in photos)

    # -------------------------------------------------------------------------------------- jobs

    def create_job(self, steps: int, base_weights: str, num_photos: int, num_boxes: int) -> Job:
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM finetune_jobs WHERE state = 'running'").fetchone() is not None:
                raise RuntimeError("a fine-tune is already running")
            cur = db.execute("INSERT INTO finetune_jobs(created, state, steps, base_weights, run_dir, num_photos, "
                             "num_boxes, started) VALUES (?, 'running', ?, ?, '', ?, ?, ?)",
                             (now, steps, base_weights, num_photos, num_boxes, now))
            job_id = int(cur.lastrowid)
            db.execute("UPDATE finetune_jobs SET run_dir = ? WHERE id = ?", (str(self.runs_dir / f"job-{job_id}"), job_id))
        job = self.job(job_id)
        assert job is not None
        return job

    def update_job(self, job_id: int, **fields: Any) -> None:
        allowed = {"state", "steps", "started", "ended", "result", "error"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"job fields: {sorted(allowed)}")
        if "state" in fields and fields["state"] not in JOB_STATES:
            raise ValueError(f"job state {fields['state']!r}")
        if "result" in fields and fields["result"] is not None:
            fields["result"] = json.dumps(fields["result"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._transaction() as db:
            db.execute(f"UPDATE finetune_jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def jobs(self) -> list[Job]:
        """All jobs, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, created, state, steps, base_weights, run_dir, num_photos, num_boxes, "
                                    "started, ended, result, error FROM finetune_jobs ORDER BY id DESC").fetchall()
        return [Job(int(r[0]), float(r[1]), r[2], int(r[3]), r[4], Path(r[5]), int(r[6]), int(r[7]), r[8], r[9],
                    json.loads(r[10]) if r[10] else None, r[11]) for r in rows]

    def job(self, job_id: int) -> Job | None:
        return next((j for j in self.jobs() if j.id == job_id), None)

    # ----------------------------------------------------------------------------- service state

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM service_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, values: dict[str, str | None]) -> None:
        """Set (or delete, for None) several keys in one transaction."""
        with self._transaction() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM service_state WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO service_state(key, value) VALUES (?, ?)", (key, value))


__all__ = ["JOB_STATES", "Job", "TrainingBox", "TrainingPhoto", "TrainingStore", "iso"]
