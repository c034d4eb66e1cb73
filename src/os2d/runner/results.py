"""Writing detections JSON Lines (format: :mod:`os2d.results`): append one flushed line per image, resume,
and merge the per-rank files of a sharded run.

A crash leaves at most a partial *last* line: :func:`os2d.results.read_jsonl` ignores it and resuming truncates
it before appending.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from os2d.files import atomic_write
from os2d.results import DetectionsFileError, JsonlContents, jsonl_line, read_jsonl

# header keys that must agree for records to be appended to (or merged with) an existing file, and what they
# are; "model" and "class_images" are content digests (os2d.runner.identity), so the weights *name* need not agree
COMPATIBLE_KEYS = {
    "format": "file format", "version": "format version", "classes": "classes",
    "class_images": "class images (content)", "model": "model weights (content)", "config": "inference options",
    "shard": "shard",
}


def _difference(key: str, ours: Any, theirs: Any) -> str:
    if key == "config" and isinstance(ours, dict) and isinstance(theirs, dict):
        keys = [k for k in {**ours, **theirs} if ours.get(k) != theirs.get(k)]
        return "inference options differ (" + ", ".join(
            f"{k}: file {ours.get(k)!r}, this run {theirs.get(k)!r}" for k in keys) + ")"
    return f"{COMPATIBLE_KEYS[key]} differ (file {ours!r}, this run {theirs!r})"


def check_compatible(existing: dict[str, Any], header: dict[str, Any], path: str | Path) -> None:
    """Refuse to mix results of different runs (other classes or class images, weights, options or shard) in
    one file: one line saying what differs and how to start afresh."""
    diff = [k for k in COMPATIBLE_KEYS if existing.get(k) != header.get(k)]
    if diff:
        details = "; ".join(_difference(k, existing.get(k), header.get(k)) for k in diff)
        raise DetectionsFileError(f"{path} holds results of a different run: {details}; write to another file "
                                  "or start afresh with --no-resume (replaces the file)")


class JsonlWriter:
    """Appends image records to a detections JSONL file, one flushed line each.

    Args:
        path: the file.
        header: :func:`os2d.results.jsonl_header` of this run.
        resume: keep the records already in the file (its header must be compatible) and cut a partial last
            line; False starts a new file.

    Attributes:
        existing: the records found when resuming (empty otherwise).
    """

    def __init__(self, path: str | Path, header: dict[str, Any], *, resume: bool = True) -> None:
        self.path = Path(path)
        self.existing = JsonlContents(header=None)
        fresh = True
        if resume and self.path.is_file():
            self.existing = read_jsonl(self.path)
            if self.existing.header is not None:
                check_compatible(self.existing.header, header, self.path)
                fresh = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.existing = JsonlContents(header=None)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
            self.write(header)
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            if self.existing.partial_tail:
                os.ftruncate(self._fd, self.existing.valid_bytes)

    def write(self, record: dict[str, Any]) -> None:
        """Append one line (a single ``write`` of the whole line; retried if the OS writes less)."""
        data = memoryview(jsonl_line(record))
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_path(output: str | Path, rank: int) -> Path:
    """``results.jsonl`` -> ``results.rank{rank}.jsonl`` (beside it)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.rank{rank}{output.suffix}")


def find_shards(output: str | Path) -> list[Path]:
    """The shard files of ``output`` present on disk, by rank: ``results.rank0.jsonl``, ``results.rank1.jsonl``..."""
    output = Path(output)
    prefix, suffix = f"{output.stem}.rank", output.suffix
    ranks = []
    for p in output.parent.glob(f"{output.stem}.rank*{suffix}"):
        middle = p.name[len(prefix): len(p.name) - len(suffix)]
        if middle.isdigit():
            ranks.append(int(middle))
    return [shard_path(output, r) for r in sorted(ranks)]


@dataclass
class MergeSummary:
    path: Path
    images: int
    failed: int
    missing: list[str]  # expected images found in no shard (only when the image list was given)


def merge_shards(shards: Iterable[str | Path], output: str | Path, *, order: list[str] | None = None) -> MergeSummary:
    """Merge the shard files of a run into one detections JSONL file (written atomically).

    Headers must agree except for the shard field. Each path's last record wins, preferring a success over an
    error. Records are ordered like ``order`` (the run's image list) when given, else rank-interleaved (image
    ``i`` of rank ``r`` of ``W`` was input ``i * W + r``), which restores the input order of a sharded run.

    Raises:
        os2d.results.DetectionsFileError: no shards, an empty or unreadable shard, or shards of different runs.
    """
    shards = [Path(s) for s in shards]
    if not shards:
        raise DetectionsFileError(f"no shard files to merge for {output}")
    contents = []
    for s in shards:
        c = read_jsonl(s)
        if c.header is None:
            raise DetectionsFileError(f"{s}: empty shard file (no header)")
        contents.append(c)
    base = {k: v for k, v in contents[0].header.items() if k != "shard"}  # type: ignore[union-attr]
    for s, c in zip(shards[1:], contents[1:], strict=True):
        check_compatible(base, {k: v for k, v in c.header.items() if k != "shard"}, s)  # type: ignore[union-attr]
    best: dict[str, dict[str, Any]] = {}
    position: dict[str, tuple[int, int]] = {}
    world = len(shards)
    for r, c in enumerate(contents):
        for i, (p, rec) in enumerate(c.latest().items()):
            position.setdefault(p, (i, r))
            if p not in best or "error" not in rec or "error" in best[p]:
                best[p] = rec
    if order is not None:
        rank_of = {p: i for i, p in enumerate(order)}
        keys = sorted(best, key=lambda p: (rank_of.get(p, len(order)), position[p]))
        missing = [p for p in order if p not in best]
    else:
        keys = sorted(best, key=lambda p: position[p][0] * world + position[p][1])
        missing = []
    lines = [base] + [best[p] for p in keys]
    payload = b"".join(jsonl_line(x) for x in lines)
    atomic_write(output, lambda f: f.write(payload))
    return MergeSummary(Path(output), len(keys), sum("error" in best[p] for p in keys), missing)
