"""Per-step training log: one JSON line per record (``train_log.jsonl``) plus CSV tables for spreadsheets.

Records are ``{"kind": "train", "step", "time", <every loss term>, "lr", "grad_norm", ...}`` for each iteration
and ``{"kind": "eval", "split": "val"|"train", "step", "mAP@0.50", ...}`` for each evaluation. The CSV files
``train_log.csv`` and ``eval_log.csv`` hold the same records (columns fixed by the first record of each kind).
On resume from step N, records after N (written before a crash, never checkpointed) are dropped first.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from os2d.files import atomic_write

JSONL_NAME = "train_log.jsonl"
TRAIN_CSV = "train_log.csv"
EVAL_CSV = "eval_log.csv"


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL log (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                break
            raise ValueError(f"{path}:{i}: not a JSON record: {e}") from e
    return records


class RunLog:
    """Appends records to the JSONL and CSV logs of a run directory."""

    def __init__(self, output_dir: str | Path, *, resume_step: int | None = None) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / JSONL_NAME
        self._columns: dict[str, list[str]] = {}
        if resume_step is not None:
            self._truncate_after(resume_step)
        else:
            for name in (JSONL_NAME, TRAIN_CSV, EVAL_CSV):
                (self.dir / name).unlink(missing_ok=True)
        for kind, name in (("train", TRAIN_CSV), ("eval", EVAL_CSV)):
            p = self.dir / name
            if p.is_file():
                with p.open(newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), None)
                if header:
                    self._columns[kind] = header

    def _truncate_after(self, step: int) -> None:
        if self.jsonl.is_file():
            kept = [r for r in read_log(self.jsonl) if int(r.get("step", 0)) <= step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.jsonl, lambda f: f.write(text.encode("utf-8")))
        for name in (TRAIN_CSV, EVAL_CSV):
            p = self.dir / name
            if not p.is_file():
                continue
            with p.open(newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            step_col = rows[0].index("step") if "step" in rows[0] else None
            kept_rows = [rows[0]] + [r for r in rows[1:] if step_col is None or (r and int(r[step_col]) <= step)]
            buf = io.StringIO()
            csv.writer(buf).writerows(kept_rows)
            data = buf.getvalue().encode("utf-8")
            atomic_write(p, lambda f, data=data: f.write(data))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (``kind`` "train" or "eval") to the JSONL log and that kind's CSV."""
        record = {k: _clean(v) for k, v in record.items()}
        with self.jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        kind = str(record.get("kind", "train"))
        name = TRAIN_CSV if kind == "train" else EVAL_CSV
        path = self.dir / name
        scalars = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
        columns = self._columns.get(kind)
        new_file = columns is None
        if columns is None:
            columns = self._columns[kind] = list(scalars)
        with path.open("a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new_file:
                w.writeheader()
            w.writerow({k: "" if scalars.get(k) is None else scalars[k] for k in columns})


__all__ = ["EVAL_CSV", "JSONL_NAME", "TRAIN_CSV", "RunLog", "read_log"]
