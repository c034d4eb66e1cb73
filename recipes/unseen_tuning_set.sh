#!/usr/bin/env bash
# The unseen-class tuning set: 60 photos of made-up logos (recipes/unseen_logos.py, classes no model trained on)
# composed by `os2d synth` onto Grocery Store *val* photos (never a training background), a gallery of 20 logos.
# It measures what the other two tuning sets cannot: new classes on real photos (the FL27 training-brand tuning set is
# training images; the synthetic val shelves show the 81 products the model trained on). Wide classes (the 20 used:
# aspect 0.8-6.8, median 3.5) like brand names and the demo shelf's cups; text is never mirrored (flip_prob 0). ~10 s. Deterministic.
#   bash recipes/unseen_tuning_set.sh [DATA] [OUT]      (defaults ../shared/data, runs/unseen-logos)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/unseen-logos}
[ -d "$OUT/classes" ] || python recipes/unseen_logos.py "$OUT/classes" --num 60 --seed 0
[ -f "$OUT/set/annotations.csv" ] || os2d synth --class-images "$OUT/classes" \
    --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$OUT/set" --num-images 60 --image-size 1024 \
    --max-classes 20 --seed 5 --shelf-prob 0.3 --config-json '{"object_size": [0.06, 0.3], "variant_prob": 0.25, "flip_prob": 0.0}' \
    --overwrite --quiet
echo "unseen-class tuning set: $OUT/set (annotations.csv, class_images.csv)"
