#!/usr/bin/env bash
# Issue 14: far more training on this CPU, made affordable by `amp: bf16` and `transform_grad: positives`
# (README, Training: "Where a CPU step goes"). See train.yaml for the recipe.
#
# Rule (written 2026-12-04 before the run started): evaluate the run's final.pt (no other checkpoint) at default
# settings on (a) the FL27 training-brand tuning set (fl27-train6: every 6th image of the 14 training brands) and
# (b) the synthetic val shelves (recipes/default_model/run.sh step 7). It replaces the shipped default only if it
# reaches >= 36.3 mAP@0.5 on (a) (the default's 35.3 + 1.0) and >= 80.0 on (b) (the default's 81.0 - 1.0). The FL27
# held-out brands, the demo shelf and the variant shelves are reported after the decision, never used for it.
#
# Resumable: run the same command again after an interrupt (training resumes from its last checkpoint; each
# finished step is skipped). RUNS may be wiped on a new machine: every step rebuilds from ../shared/data.
#   bash recipes/longer_training/run.sh          # ~60 min of training on an idle 2-core CPU with bf16
set -euo pipefail
source recipes/variant_stage.sh
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
OUT="$RUNS/longer-training"

# 0. the starting point: stage 2, the shipped default until this recipe replaced it (commit 85e26b3)
mkdir -p "$OUT"
[ -f "$OUT/stage2.pt" ] || git show 85e26b3:src/os2d/assets/os2d_lite0_v2.pt > "$OUT/stage2.pt"
# 1-3. 600 shelves with variant classes (seed 0) + FL27 training-brand boxes, then training (resumes when interrupted)
variant_stage_train "$OUT" 0 recipes/longer_training/train.yaml "$OUT/stage2.pt"
# 4. the rule's evaluations (tuning sets only)
tuning_evals "$OUT"
# 5. it passed the rule (42.5 >= 36.3 and 81.7 >= 80.0), so it ships: calibrated on the same two tuning sets, written
#    as float16 into the package. It shipped calibrated on raw scores (the default then); since the second look became
#    the default (2026-12-05) the calibration is fitted on second-look scores of the same sets (again when the second
#    look's crops became 160^2, the default verify_size; the evaluations take the default):
second_look_evals "$OUT"
os2d weights calibrate "$OUT/run/final.pt" --from-eval "$OUT/fl27-train6-verify" "$OUT/synth-val-verify" \
    --output src/os2d/assets/os2d_lite0_v2.pt --force --plot "$OUT/calibration.png"
# 6. the baselines' packaged heads are trained on the shipped trunk (stage 3 trains its last 5 blocks): retrain them
#    (~8 + ~30 min with one thread each); their fingerprint check refuses a trunk they were not trained on
#      bash recipes/detector_retrieval/run.sh && bash recipes/coae/run.sh
