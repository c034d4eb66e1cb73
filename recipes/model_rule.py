"""A model stage's rule on the tuning sets (recipes/real_packages/rule.txt; the Lite2 rule's (a)-(c)), read from two
``benchmarks/default_arms.py`` logs with one arm each over synth-val, unseen and the four FL27 sixths.

    python recipes/model_rule.py BASE.log NEW.log BASE_ARM NEW_ARM
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


def judge(base: dict, new: dict, base_arm: str, new_arm: str) -> bool:
    """Prints the table and the rule's checks; True when all pass."""
    sets = ("unseen", "synth-val", *FL27)
    d = {s: map50(new[(s, new_arm)]) - map50(base[(s, base_arm)]) for s in sets}
    print(f"| set | {base_arm} mAP@0.5 | {new_arm} mAP@0.5 | delta |")
    print("|---|---:|---:|---:|")
    for s, delta in d.items():
        print(f"| {s} | {map50(base[(s, base_arm)]):.2f} | {map50(new[(s, new_arm)]):.2f} | {delta:+.2f} |")
    fl27 = sum(d[s] for s in FL27) / len(FL27)
    checks = {
        "(a) unseen >= +1.0": d["unseen"] >= 1.0,
        "(b) synth-val >= -0.3": d["synth-val"] >= -0.3,
        f"(c) FL27 four-sixth mean {fl27:+.2f} >= -1.0": fl27 >= -1.0,
    }
    for name, ok in checks.items():
        print(f"{name}: {'pass' if ok else 'FAIL'}")
    return all(checks.values())


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit("usage: python recipes/model_rule.py BASE.log NEW.log BASE_ARM NEW_ARM")
    base_log, new_log, base_arm, new_arm = sys.argv[1:]
    ok = judge(rows(Path(base_log)), rows(Path(new_log)), base_arm, new_arm)
    print(f"PASSED: {new_arm} replaces the default" if ok else f"not passed: the {base_arm} model stays")


if __name__ == "__main__":
    main()
