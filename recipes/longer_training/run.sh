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
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
OUT="$RUNS/longer-training"

# 0. the starting point: stage 2, the shipped default until this recipe replaced it (commit 85e26b3)
mkdir -p "$OUT"
[ -f "$OUT/stage2.pt" ] || git show 85e26b3:src/os2d/assets/os2d_lite0_v2.pt > "$OUT/stage2.pt"
# 1. class images of the 81 Grocery Store products, and 600 shelves with variant classes on Grocery Store TRAIN photos
mkdir -p "$OUT/synth"
[ -f "$OUT/synth/classes.csv" ] || python recipes/grocery_classes.py "$DATA" "$OUT/synth/classes.csv"
[ -f "$OUT/synth/out/annotations.csv" ] || os2d synth --class-images "$OUT/synth/classes.csv" \
    --backgrounds "$DATA/grocerystore/dataset/train" --output-dir "$OUT/synth/out" --num-images 600 --seed 0 \
    --config-json '{"variant_prob": 0.5}' --overwrite --quiet
# 2. training CSVs: FL27 boxes of the 14 training brands + the shelves
[ -f "$OUT/data/train_boxes.csv" ] || python recipes/default_model/make_train_csv.py \
    --fl27 "$DATA/flickrlogos27-dev" --synth "$OUT/synth/out" --out "$OUT/data"
# 3. training (resumes when interrupted)
if [ ! -f "$OUT/run/final.pt" ]; then
    if ls "$OUT"/run/checkpoints/step_*.pt >/dev/null 2>&1; then
        os2d train --resume "$OUT/run"
    else
        os2d train --config recipes/longer_training/train.yaml "train_data.annotations=$OUT/data/train_boxes.csv" \
            "train_data.classes=$OUT/data/train_classes.csv" "init.weights=$OUT/stage2.pt" "output_dir=$OUT/run"
    fi
fi
# 4. the rule's evaluations (tuning sets only)
TRAIN_BRANDS=$(python -c "from os2d.data.spec import FL27_TRAIN_BRANDS; print(*FL27_TRAIN_BRANDS)")
if [ ! -f "$RUNS/fl27-train6/annotations.csv" ]; then
    python recipes/fl27_tuning_set.py "$DATA/flickrlogos27-dev" "$RUNS/fl27-train6"
fi
[ -f "$RUNS/synth-grocery-eval/annotations.csv" ] || os2d synth \
    --class-images "$DATA/grocerystore/dataset/iconic-images-and-descriptions" \
    --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$RUNS/synth-grocery-eval" \
    --num-images 40 --image-size 768 --max-classes 20 --seed 11 --overwrite --quiet
[ -f "$OUT/fl27-train6/metrics.json" ] || os2d eval --boxes "$RUNS/fl27-train6/annotations.csv" \
    --image-dir "$DATA/flickrlogos27-dev" --classes "$DATA/flickrlogos27-dev/class_images.csv" \
    --class-names $TRAIN_BRANDS --exclude-class-sources --weights "$OUT/run/final.pt" \
    --output-dir "$OUT/fl27-train6" --no-plots --quiet
[ -f "$OUT/synth-val/metrics.json" ] || os2d eval --boxes "$RUNS/synth-grocery-eval/annotations.csv" \
    --classes "$RUNS/synth-grocery-eval/class_images.csv" --image-dir "$RUNS/synth-grocery-eval" \
    --weights "$OUT/run/final.pt" --output-dir "$OUT/synth-val" --no-plots --quiet
# 5. it passed the rule (42.5 >= 36.3 and 81.7 >= 80.0), so it ships: calibrated on the same two tuning evaluations
#    (as stage 2's calibration was), written as float16 into the package
os2d weights calibrate "$OUT/run/final.pt" --from-eval "$OUT/fl27-train6" "$OUT/synth-val" \
    --output src/os2d/assets/os2d_lite0_v2.pt --force --plot "$OUT/calibration.png"
# 6. the baselines' packaged heads are trained on the shipped trunk (stage 3 trains its last 5 blocks): retrain them
#    (~8 + ~30 min with one thread each); their fingerprint check refuses a trunk they were not trained on
#      bash recipes/detector_retrieval/run.sh && bash recipes/coae/run.sh
