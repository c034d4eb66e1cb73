#!/usr/bin/env bash
# Issue 14, new classes: stage 3 + 2000 TransformNet-only steps with 300 label-free patch classes added (train.yaml says
# why). ~15 min of steps on an idle 2-core CPU with bf16 + ~25 min of evaluations.
#
# Rule (written 2026-12-06 before the run's results; ~/os2d-runs/c26/unseen_rule.txt): the three tuning sets at default
# settings (`os2d eval` with no options): the unseen-class set (recipes/unseen_tuning_set.sh), the FL27 training-brand
# tuning set and the synthetic val shelves. The run's final.pt (no other checkpoint) replaces stage 3 only if the unseen
# set gains >= 1.0 mAP@0.5, the synthetic shelves lose <= 0.3 and the FL27 tuning set (training images: a fit measure)
# loses <= 1.0 (rule.py prints it). The held-out FL27 brands and the demo shelf are measured after the decision.
#
# Resumable: run the same command again after an interrupt. RUNS may be wiped on a new machine: every step rebuilds
# from ../shared/data and git.
#   bash recipes/unseen_stage/run.sh
set -euo pipefail
source recipes/variant_stage.sh
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
OUT="$RUNS/unseen-stage"
STAGE3_COMMIT=${STAGE3_COMMIT:-6b10857}  # stage 3's weights as they ship (calibrated for the second look with rivals)

mkdir -p "$OUT"
[ -f "$OUT/stage3.pt" ] || git show "$STAGE3_COMMIT:src/os2d/assets/os2d_lite0_v2.pt" > "$OUT/stage3.pt"
# 1. stage 3's own data (600 variant shelves, seed 0) ...
variant_shelves "$OUT" 0
# 2. ... + 600 shelves of 300 patch classes (patches of even coarse classes' photos on odd ones' photos)
[ -d "$OUT/patches/classes" ] || python recipes/patch_classes.py "$DATA" "$OUT/patches" --num 300 --seed 0
if [ ! -f "$OUT/patches/synth/annotations.csv" ]; then
    rm -rf "$OUT/patches/synth"
    os2d synth --class-images "$OUT/patches/classes" --backgrounds "$OUT/patches/backgrounds" \
        --output-dir "$OUT/patches/synth" --num-images 600 --seed 21 --config-json '{"variant_prob": 0.3}' --overwrite --quiet
fi
[ -f "$OUT/data/train_boxes.csv" ] || python recipes/default_model/make_train_csv.py --fl27 "$DATA/flickrlogos27-dev" \
    --synth "$OUT/synth/out" "$OUT/patches/synth" --out "$OUT/data"
# 3. training (resumes when interrupted), then the rule's evaluations at default settings, stage 3 and the
#    new model, and the rule
train_and_judge "$OUT" recipes/unseen_stage/train.yaml stage3
# 4. if it passed: calibrate on the new model's two tuning evaluations and write it into the package
#    os2d weights calibrate "$OUT/run/final.pt" --from-eval "$OUT/fl27-train6-verify" "$OUT/synth-val-verify" \
#        --output src/os2d/assets/os2d_lite0_v2.pt --force --plot "$OUT/calibration.png"
#
# Result (run 2026-12-06, 2000 steps in 13 min at 0.4 s per step; the training loss stayed flat, 0.10 -> 0.11):
# unseen-class set 25.41 -> 20.68, synthetic val 90.55 -> 89.15, FL27 tuning 48.99 -> 45.46 (mAP@0.5): not passed.
# Stage 3 stays the default; the held-out sets were not run.
