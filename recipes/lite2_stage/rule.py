"""The Lite2 stage's rule (rule.txt), read from the logs ``run.sh`` writes into OUT.

    python recipes/lite2_stage/rule.py OUT

``OUT/arms-default.log`` and ``OUT/arms-lite2.log``: ``benchmarks/default_arms.py`` with one arm each (mAP);
``OUT/time-fl27-train.log`` and ``OUT/time-synth-val.log``: both arms in one process (seconds per image).
"""

from __future__ import annotations

import sys
from pathlib import Path

FL27 = ("fl27-train", "fl27-train-b", "fl27-train-c", "fl27-train-d")


def rows(log: Path) -> dict[tuple[str, str], list[str]]:
    """(set, arm) -> the table row's cells, from the final table of a default_arms.py log."""
    out = {}
    for line in log.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[1].isdigit():
            out[(cells[0], cells[2])] = cells
    return out


def map50(cells: list[str]) -> float:
    return float(cells[3].split()[0])


def main() -> None:
    out = Path(sys.argv[1])
    base, new = rows(out / "arms-default.log"), rows(out / "arms-lite2.log")
    d = {s: map50(new[(s, "lite2")]) - map50(base[(s, "default")]) for s in ("unseen", "synth-val", *FL27)}
    print("| set | default mAP@0.5 | lite2 mAP@0.5 | delta |")
    print("|---|---:|---:|---:|")
    for s, delta in d.items():
        print(f"| {s} | {map50(base[(s, 'default')]):.2f} | {map50(new[(s, 'lite2')]):.2f} | {delta:+.2f} |")
    fl27 = sum(d[s] for s in FL27) / len(FL27)
    ratios = {s: float(rows(out / f"time-{s}.log")[(s, "lite2")][7].rstrip("x")) for s in ("fl27-train", "synth-val")}
    checks = {
        "(a) unseen >= +1.0": d["unseen"] >= 1.0,
        "(b) synth-val >= -0.3": d["synth-val"] >= -0.3,
        f"(c) FL27 four-sixth mean {fl27:+.2f} >= -1.0": fl27 >= -1.0,
        f"(d) time ratios {ratios} <= 1.3": all(r <= 1.3 for r in ratios.values()),
    }
    for name, ok in checks.items():
        print(f"{name}: {'pass' if ok else 'FAIL'}")
    print("PASSED: Lite2 replaces the default" if all(checks.values()) else "not passed: the Lite0 default stays")


if __name__ == "__main__":
    main()
