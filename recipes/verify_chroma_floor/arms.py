"""The arms of recipes/verify_chroma_floor/rule.txt: the default pipeline with the chromatic factor's floor
(``os2d.inference.verify.CHROMA_FLOOR``) at the default and at 0.25, round-robin on the same photos, as
``benchmarks/default_arms.py`` prints them.

    python recipes/verify_chroma_floor/arms.py --sets synth-val unseen fl27-train fl27-train-b
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from default_arms import print_table, run_arms, table_rows  # noqa: E402

from os2d.inference import verify  # noqa: E402

FLOORS = {"control": 0.01, "floor0.25": 0.25}  # control: the floor before the rule (MIN_AGREEMENT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "unseen", "fl27-train", "fl27-train-b"])
    args = ap.parse_args()

    def before(arm: str) -> None:
        verify.CHROMA_FLOOR = FLOORS[arm]

    rows = [row for s in args.sets for row in table_rows(run_arms(s, {a: {} for a in FLOORS}, before=before))]
    print_table(f"default pipeline, chromatic factor floors {FLOORS}", rows)


if __name__ == "__main__":
    main()
