"""The unseen stage's rule (run.sh): mAP@0.5 of stage 3 and the new model on the three tuning sets.

    python recipes/unseen_stage/rule.py BASE_DIR NEW_DIR

Each directory holds the ``os2d eval`` output folders ``unseen``, ``fl27-train6-verify`` and ``synth-val-verify``
(default settings). Prints the table and whether the rule (written in run.sh before the run) passes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SETS = {  # folder: (name, largest loss allowed (negative) or smallest gain required)
    "unseen": ("unseen-class set", 1.0),
    "synth-val-verify": ("synthetic val shelves", -0.3),
    "fl27-train6-verify": ("FL27 training-brand tuning set", -1.0),
}


def map50(folder: Path) -> float:
    return 100 * json.loads((folder / "metrics.json").read_text())["metrics"]["mAP@0.50"]


def main() -> None:
    base, new = Path(sys.argv[1]), Path(sys.argv[2])
    ok = True
    print("| set | stage 3 | new | delta | needed |")
    print("|---|---:|---:|---:|---:|")
    for folder, (name, bound) in SETS.items():
        a, b = map50(base / folder), map50(new / folder)
        passed = b - a >= bound
        ok &= passed
        print(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | >= {bound:+.1f} "
              f"{'' if passed else '(fails)'} |")
    print("PASSED: ship it" if ok else "not passed: stage 3 stays the default")


if __name__ == "__main__":
    main()
