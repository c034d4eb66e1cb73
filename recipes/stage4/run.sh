#!/usr/bin/env bash
# Issue 14: stage 4 of the default model (train.yaml): stage 3 + 12000 steps with new variant shelves and hard
# patch mining. ~2.2 h of steps + ~30 min of mining on an idle 2-core CPU with bf16.
#
# Rule (written 2026-12-05 before the run started): evaluate the run's final.pt (no other checkpoint) at default
# settings on (a) the FL27 training-brand tuning set (fl27-train6) and (b) the synthetic val shelves, as stage 3's
# rule did. It replaces the shipped default (stage 3) only if it reaches >= 43.5 mAP@0.5 on (a) (stage 3's 42.5 + 1.0)
# and >= 80.7 on (b) (stage 3's 81.7 - 1.0). The FL27 held-out brands, the demo shelf and the variant shelves are
# reported after the decision, never used for it.
#
# Result (run 2026-12-05, all 12000 steps): FL27 tuning 36.8 (rule >= 43.5), synthetic val 81.8 (rule >= 80.7):
# not passed, so stage 3 stays the default. The held-out sets were not run.
#
# Resumable: run the same command again after an interrupt. RUNS may be wiped on a new machine: every step rebuilds
# from ../shared/data and git.
#   bash recipes/stage4/run.sh
set -euo pipefail
source recipes/variant_stage.sh
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
OUT="$RUNS/stage4"
STAGE3_COMMIT=${STAGE3_COMMIT:-8d0fd8a}  # the commit that shipped stage 3

mkdir -p "$OUT"
[ -f "$OUT/stage3.pt" ] || git show "$STAGE3_COMMIT:src/os2d/assets/os2d_lite0_v2.pt" > "$OUT/stage3.pt"
# 1-3. 600 new shelves with variant classes (seed 1; stage 3 used seed 0) + FL27 training-brand boxes, then training (resumes when interrupted)
variant_stage_train "$OUT" 1 recipes/stage4/train.yaml "$OUT/stage3.pt"
# 4. the rule's evaluations (tuning sets only)
tuning_evals "$OUT"
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
a = json.load(open(f"{out}/fl27-train6/metrics.json"))["metrics"]["mAP@0.50"] * 100
b = json.load(open(f"{out}/synth-val/metrics.json"))["metrics"]["mAP@0.50"] * 100
ok = a >= 43.5 and b >= 80.7
print(f"stage 4: FL27 tuning {a:.1f} (rule >= 43.5), synthetic val {b:.1f} (rule >= 80.7): {'PASSED' if ok else 'not passed'}")
PY
# 5. if it passed: calibrate on the two tuning evaluations and write the candidate (the packaged detector and CoAE
#    heads then need retraining on its trunk before it ships: recipes/longer_training/run.sh step 6)
#    second_look_evals "$OUT"   # the default's score kind (the second look)
#    os2d weights calibrate "$OUT/run/final.pt" --from-eval "$OUT/fl27-train6-verify" "$OUT/synth-val-verify" \
#        --output "$OUT/os2d_lite0_v2_stage4.pt" --force --plot "$OUT/calibration.png"
