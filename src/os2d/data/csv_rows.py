"""CSV annotation files as numbered rows: the header and ``(line, row)`` pairs, and the required columns."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from os2d.data.validate import AnnotationError


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (stripped, lower-case) and ``(line_number, row)`` pairs of a CSV file; blank rows skipped."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise AnnotationError(f"{path}: empty file (no header row)") from None
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append((reader.line_num, dict(zip(header, values, strict=False))))
    return header, rows


def require_columns(path: Path, header: Sequence[str], columns: Iterable[str]) -> None:
    """Raise :class:`AnnotationError` naming the columns of ``columns`` missing from ``header``."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise AnnotationError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {list(header)}")


__all__ = ["read_csv_rows", "require_columns"]
