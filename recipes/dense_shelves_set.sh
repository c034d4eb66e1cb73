#!/usr/bin/env bash
# The dense-shelf tuning set: 40 synthetic shelves (os2d synth, shelf scenes only) of 3-6 rows packed with runs of
# 2-6 facings of the 31 Grocery Store packages (milk cartons, juices, yoghurts: near look-alikes, plus labelled variant
# classes), small in the frame (800 px, products about 1/5 of the height) on Grocery Store *val* backgrounds. It is
# the tuning set for the failure the other sets miss: a photo full of small, near-identical facings, where a large probe
# template matching a group of products can beat the small one matching one product (the demo shelf's collapse,
# recipes/autoscale_dense). ~10 s. Deterministic.
#   bash recipes/dense_shelves_set.sh [DATA] [OUT]      (defaults ../shared/data, runs/dense-shelves)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/dense-shelves}
[ -f "$OUT/annotations.csv" ] || os2d synth \
    --class-images "$DATA/grocerystore/dataset/iconic-images-and-descriptions/Packages" \
    --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$OUT" --num-images 40 --image-size 800 \
    --shelf-prob 1 --seed 31 --preview 6 --overwrite --quiet --config-json \
    '{"aspect_range": [1.2, 1.45], "shelf_rows": [3, 6], "facings": [2, 6], "product_height": [0.75, 0.95], "classes_per_image": [2, 4], "variant_prob": 0.3}'
echo "dense-shelf tuning set: $OUT (annotations.csv, class_images.csv)"
