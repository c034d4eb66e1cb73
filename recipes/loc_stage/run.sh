#!/usr/bin/env bash
# Issue 14, tighter boxes: stage 3 + 2000 steps with the localisation loss (weight 0.2), only the TransformNet trained
# (train.yaml says why). ~25 min of steps on an idle 2-core CPU with bf16, + ~20 min of evaluations.
#
# Rule (written 2026-12-06 before the run started): evaluate the run's final.pt (no other checkpoint) at default
# settings (the second look with its rivals and shape search, as `os2d eval` runs with no options) on the two tuning
# sets, the FL27 training-brand tuning set (fl27-train6) and the 40 synthetic val shelves, against stage 3 (the
# shipped default) evaluated the same way. It replaces the shipped default only if (the mean mAP@0.5 gain over the two
# sets >= 0.5 or the mean mAP@0.7 gain >= 1.0) and neither set loses more than 0.3 mAP@0.5 (rule.py prints it). The
# FL27 held-out brands, the 81-product shelves and the demo shelf are measured after the decision, never for it.
#
# Resumable: run the same command again after an interrupt. RUNS may be wiped on a new machine: every step rebuilds
# from ../shared/data and git.
#   bash recipes/loc_stage/run.sh
set -euo pipefail
source recipes/variant_stage.sh
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
OUT="$RUNS/loc-stage"
STAGE3_COMMIT=${STAGE3_COMMIT:-8de48dd}  # stage 3's weights with the calibration of the second look with rivals

mkdir -p "$OUT/stage3/run"
[ -f "$OUT/stage3.pt" ] || git show "$STAGE3_COMMIT:src/os2d/assets/os2d_lite0_v2.pt" > "$OUT/stage3.pt"
# 1-3. stage 3's data (600 variant shelves, seed 0, + FL27 training-brand boxes), then training (resumes when interrupted)
variant_stage_train "$OUT" 0 recipes/loc_stage/train.yaml "$OUT/stage3.pt"
# 4. the rule's evaluations at default settings (tuning sets only), stage 3 and the new model
[ -f "$OUT/stage3/run/final.pt" ] || cp "$OUT/stage3.pt" "$OUT/stage3/run/final.pt"
second_look_evals "$OUT/stage3"
second_look_evals "$OUT"
python recipes/loc_stage/rule.py "$DATA" "$RUNS" "$OUT/stage3" "$OUT"
# 5. if it passed: calibrate on the new model's two tuning evaluations and write it into the package
#    os2d weights calibrate "$OUT/run/final.pt" --from-eval "$OUT/fl27-train6-verify" "$OUT/synth-val-verify" \
#        --output src/os2d/assets/os2d_lite0_v2.pt --force --plot "$OUT/calibration.png"
#
# Result of round 1 (run 2026-12-06, 2000 steps in 13 min): fl27-train6 mAP@0.5 48.99 -> 44.74, mAP@0.7 25.83 -> 35.02;
# synthetic val 90.55 -> 89.07, mAP@0.7 86.34 -> 85.83: not passed (the boxes tighten, recognition falls: the conflict
# the paper reports for V2).
#
# Round 2 (rule written 2026-12-06 after round 1, before its run): the same with loc_weight 0.05, everything else and
# the rule unchanged. No round 3.
R2="$OUT/round2"
mkdir -p "$R2"
train_or_resume "$R2/run" recipes/loc_stage/train.yaml "train_data.annotations=$OUT/data/train_boxes.csv" \
    "train_data.classes=$OUT/data/train_classes.csv" "init.weights=$OUT/stage3.pt" "loss.loc_weight=0.05"
second_look_evals "$R2"
python recipes/loc_stage/rule.py "$DATA" "$RUNS" "$OUT/stage3" "$R2"
#
# Result of round 2 (run 2026-12-06): fl27-train6 mAP@0.5 48.99 -> 48.12, mAP@0.7 25.83 -> 24.17; synthetic val
# 90.55 -> 89.38, mAP@0.7 86.34 -> 85.03: not passed. Stage 3 stays the default; the held-out sets were not run.
#
# Round 1's final.pt as a separate box head beside stage 3 (the same backbone; tried 2026-12-06, not adopted: README,
# "A separate box head"), rule in the README:
#   python benchmarks/box_head.py --sets fl27-train synth-val --box-net "$OUT/run/final.pt" \
#       --arms control pre-gate post-gate pre-gate-noshape post-gate-noshape shape-cand
