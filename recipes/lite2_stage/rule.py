"""The Lite2 stage's rule (rule.txt), read from the logs ``run.sh`` writes into OUT.

    python recipes/lite2_stage/rule.py OUT

``OUT/arms-default.log`` and ``OUT/arms-lite2.log``: ``benchmarks/default_arms.py`` with one arm each (mAP);
``OUT/time-fl27-train.log`` and ``OUT/time-synth-val.log``: both arms in one process (seconds per image).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_rule import judge, rows  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    ok = judge(rows(out / "arms-default.log"), rows(out / "arms-lite2.log"), "default", "lite2")
    ratios = {s: float(rows(out / f"time-{s}.log")[(s, "lite2")][7].rstrip("x")) for s in ("fl27-train", "synth-val")}
    fast = all(r <= 1.3 for r in ratios.values())
    print(f"(d) time ratios {ratios} <= 1.3: {'pass' if fast else 'FAIL'}")
    print("PASSED: Lite2 replaces the default" if ok and fast else "not passed: the Lite0 default stays")


if __name__ == "__main__":
    main()
