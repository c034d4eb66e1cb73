#!/usr/bin/env bash
# The three dense-shelf tuning sets, 40 synthetic shelves each (os2d synth, shelf scenes only) of 3-6 rows packed with
# runs of 2-6 facings, small in the frame (800 px, a row about 1/4 of the height), on Grocery Store *val* backgrounds
# (never a training background), near look-alikes and labelled variant classes among them. They are the tuning sets
# for the failure the others miss: a photo full of small, near-identical facings, where a large probe template
# matching a group of products can beat the small one matching one product (the demo shelf's collapse,
# recipes/autoscale_dense).
#   OUT/dense-shelves: the 31 Grocery Store packages (classes the shipped model trained on).
#   OUT/dense-unseen: 30 made-up wide logos no model trained on (recipes/unseen_logos.py, logos 30-59: not the
#   unseen-class set's 20), never mirrored (text).
#   OUT/dense-blocks: the 31 packages in *blocks*, as supermarkets stock them: 1-2 products per photo, runs of 6-10
#   facings in 4-6 rows, so one product fills whole stacked rows (twenty-third sitting: the default's size prior sends a
#   block's product to a smaller level, where a large template matches a group of facings; recipes/autoscale_block).
# ~20 s. Deterministic.
#   bash recipes/dense_shelves_set.sh [DATA] [OUT]      (defaults ../shared/data, runs)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs}
DENSE='"aspect_range": [1.2, 1.45], "shelf_rows": [3, 6], "facings": [2, 6], "product_height": [0.75, 0.95], "classes_per_image": [2, 4], "variant_prob": 0.3'
[ -f "$OUT/dense-shelves/annotations.csv" ] || os2d synth \
    --class-images "$DATA/grocerystore/dataset/iconic-images-and-descriptions/Packages" \
    --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$OUT/dense-shelves" --num-images 40 --image-size 800 \
    --shelf-prob 1 --seed 31 --preview 6 --overwrite --quiet --config-json "{$DENSE}"
if [ ! -f "$OUT/dense-unseen/annotations.csv" ]; then
    [ -d "$OUT/unseen-logos/classes" ] || python recipes/unseen_logos.py "$OUT/unseen-logos/classes" --num 60 --seed 0
    mkdir -p "$OUT/dense-unseen-classes"
    { echo "name,path"; for i in $(seq 30 59); do echo "logo0$i,$(cd "$OUT/unseen-logos/classes" && pwd)/logo0$i.png"; done; } \
        > "$OUT/dense-unseen-classes/classes.csv"
    os2d synth --class-images "$OUT/dense-unseen-classes/classes.csv" \
        --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$OUT/dense-unseen" --num-images 40 --image-size 800 \
        --shelf-prob 1 --seed 41 --preview 6 --overwrite --quiet --config-json "{$DENSE, \"flip_prob\": 0.0}"
fi
BLOCKS='"aspect_range": [1.2, 1.45], "shelf_rows": [4, 6], "facings": [6, 10], "product_height": [0.85, 0.95], "classes_per_image": [1, 2], "variant_prob": 0.3'
[ -f "$OUT/dense-blocks/annotations.csv" ] || os2d synth \
    --class-images "$DATA/grocerystore/dataset/iconic-images-and-descriptions/Packages" \
    --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$OUT/dense-blocks" --num-images 40 --image-size 800 \
    --shelf-prob 1 --seed 51 --preview 6 --overwrite --quiet --config-json "{$BLOCKS}"
echo "dense-shelf tuning sets: $OUT/dense-shelves, $OUT/dense-unseen, $OUT/dense-blocks (annotations.csv, class_images.csv)"
