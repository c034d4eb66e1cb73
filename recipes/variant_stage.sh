# Shared steps of the default model's later stages (recipes/longer_training, stage4, unseen_stage, aspect_stage):
# sourced, not run.
# Needs DATA (../shared/data) and RUNS set by the caller; every step is skipped when its output exists.

# variant_stage_train OUT SEED CONFIG INIT: 600 variant shelves (os2d synth --seed SEED, variant_prob 0.5) on Grocery
# Store TRAIN photos + FL27 boxes of the 14 training brands, then `os2d train --config CONFIG` from INIT into OUT/run
# (resumes from its last checkpoint when interrupted).
variant_stage_train() {
    local out=$1 seed=$2 config=$3 init=$4
    variant_shelves "$out" "$seed"
    [ -f "$out/data/train_boxes.csv" ] || python recipes/default_model/make_train_csv.py \
        --fl27 "$DATA/flickrlogos27-dev" --synth "$out/synth/out" --out "$out/data"
    train_or_resume "$out/run" "$config" "train_data.annotations=$out/data/train_boxes.csv" \
        "train_data.classes=$out/data/train_classes.csv" "init.weights=$init"
}

# variant_shelves OUT SEED: the 600 variant shelves of the later stages (os2d synth --seed SEED, variant_prob 0.5, the
# 81 Grocery Store products on Grocery Store TRAIN photos) into OUT/synth/out.
variant_shelves() {
    local out=$1 seed=$2
    mkdir -p "$out/synth"
    [ -f "$out/synth/classes.csv" ] || python recipes/grocery_classes.py "$DATA" "$out/synth/classes.csv"
    if [ ! -f "$out/synth/out/annotations.csv" ]; then
        rm -rf "$out/synth/out"  # an interrupted synth leaves a partial folder that os2d synth refuses to touch
        os2d synth --class-images "$out/synth/classes.csv" \
            --backgrounds "$DATA/grocerystore/dataset/train" --output-dir "$out/synth/out" --num-images 600 \
            --seed "$seed" --config-json '{"variant_prob": 0.5}' --overwrite --quiet
    fi
}

# train_or_resume RUN CONFIG [OVERRIDE...]: `os2d train --config CONFIG OVERRIDE... output_dir=RUN`, resumed from its
# last checkpoint when interrupted, skipped when RUN/final.pt exists.
train_or_resume() {
    local run=$1 config=$2
    shift 2
    [ -f "$run/final.pt" ] && return 0
    if ls "$run"/checkpoints/step_*.pt >/dev/null 2>&1; then
        os2d train --resume "$run"
    else
        os2d train --config "$config" "$@" "output_dir=$run"
    fi
}

# tuning_evals OUT: OUT/run/final.pt at default settings on the two tuning sets of the stages' rules, the FL27
# training-brand tuning set (every 6th image) and 40 synthetic val shelves, into OUT/fl27-train6 and OUT/synth-val.
# The rules compare the model's own scores, so the second look stays off (--verify-rescore 0) as when they were set.
tuning_evals() {
    _tuning_pair "$1" "" 0
}

# second_look_evals OUT: OUT/run/final.pt on the same two tuning sets with the second look (--verify-rescore 2, the
# default's score kind since 2026-12-05), into OUT/fl27-train6-verify and OUT/synth-val-verify: what a shipped model's
# calibration is fitted on (os2d weights calibrate ... --from-eval OUT/fl27-train6-verify OUT/synth-val-verify).
second_look_evals() {
    _tuning_pair "$1" -verify 2
}

# train_and_judge OUT CONFIG BASE: `os2d train --config CONFIG` from the weights file OUT/BASE.pt on OUT/data's CSVs into
# OUT/run (resumed when interrupted), then both models on the three tuning sets (OUT/BASE holds the base model's
# evaluations) and the later stages' rule (recipes/unseen_stage/rule.py) printed.
train_and_judge() {
    local out=$1 config=$2 base=$3
    train_or_resume "$out/run" "$config" "train_data.annotations=$out/data/train_boxes.csv" \
        "train_data.classes=$out/data/train_classes.csv" "init.weights=$out/$base.pt"
    mkdir -p "$out/$base/run"
    [ -f "$out/$base/run/final.pt" ] || cp "$out/$base.pt" "$out/$base/run/final.pt"
    three_set_evals "$out/$base"
    three_set_evals "$out"
    python recipes/unseen_stage/rule.py "$out/$base" "$out"
}

# three_set_evals OUT: second_look_evals OUT + OUT/run/final.pt on the unseen-class tuning set (made when missing) into
# OUT/unseen: the three tuning sets of the later stages' rules (recipes/unseen_stage/rule.py), at default settings.
three_set_evals() {
    local out=$1
    second_look_evals "$out"
    bash recipes/unseen_tuning_set.sh "$DATA" "$RUNS/unseen-logos"
    [ -f "$out/unseen/metrics.json" ] || os2d eval --boxes "$RUNS/unseen-logos/set/annotations.csv" \
        --classes "$RUNS/unseen-logos/set/class_images.csv" --weights "$out/run/final.pt" --output-dir "$out/unseen" \
        --no-plots --quiet
}

# synth_val_set DIR: the 40 synthetic val shelves (20 Grocery Store products on Grocery Store VAL photos, seed 11) in DIR,
# made when missing.
synth_val_set() {
    [ -f "$1/annotations.csv" ] || os2d synth \
        --class-images "$DATA/grocerystore/dataset/iconic-images-and-descriptions" \
        --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$1" \
        --num-images 40 --image-size 768 --max-classes 20 --seed 11 --overwrite --quiet
}

# _tuning_pair OUT SUFFIX G: the two tuning sets (made when missing), evaluated with --verify-rescore G into
# OUT/fl27-train6SUFFIX and OUT/synth-valSUFFIX (each skipped when done).
_tuning_pair() {
    local out=$1 suffix=$2 gamma=$3 brands
    brands=$(python -c "from os2d.data.spec import FL27_TRAIN_BRANDS; print(*FL27_TRAIN_BRANDS)")
    [ -f "$RUNS/fl27-train6/annotations.csv" ] || \
        python recipes/fl27_tuning_set.py "$DATA/flickrlogos27-dev" "$RUNS/fl27-train6"
    synth_val_set "$RUNS/synth-grocery-eval"
    # shellcheck disable=SC2086  # one argument per brand
    [ -f "$out/fl27-train6$suffix/metrics.json" ] || os2d eval --boxes "$RUNS/fl27-train6/annotations.csv" \
        --image-dir "$DATA/flickrlogos27-dev" --classes "$DATA/flickrlogos27-dev/class_images.csv" \
        --class-names $brands --exclude-class-sources --weights "$out/run/final.pt" \
        --verify-rescore "$gamma" --output-dir "$out/fl27-train6$suffix" --no-plots --quiet
    [ -f "$out/synth-val$suffix/metrics.json" ] || os2d eval --boxes "$RUNS/synth-grocery-eval/annotations.csv" \
        --classes "$RUNS/synth-grocery-eval/class_images.csv" --image-dir "$RUNS/synth-grocery-eval" \
        --weights "$out/run/final.pt" --verify-rescore "$gamma" --output-dir "$out/synth-val$suffix" --no-plots --quiet
}
