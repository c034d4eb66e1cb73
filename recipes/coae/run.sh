#!/usr/bin/env bash
# How the packaged CoAE head (src/os2d/assets/coae_lite0.pt) of the CoAE baseline was made, on a 2-core CPU with
# one thread (~30 min measured: 8 min caching, 21 min training). Run from the repository root with ../shared/data. Resumable: run it again after an interrupt.
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/coae}
SYNTH=${SYNTH:-$RUNS/synth/out}  # reuse the default model's synthetic shelves if you have them (same command)
export OMP_NUM_THREADS=1

# 1. 600 synthetic shelves on Grocery Store TRAIN photos, class images of the 81 products (the default model's step 2)
if [ ! -f "$SYNTH/annotations.csv" ]; then
    mkdir -p "$RUNS/synth"
    python recipes/grocery_classes.py "$DATA" "$RUNS/synth/classes.csv"
    os2d synth --class-images "$RUNS/synth/classes.csv" --backgrounds "$DATA/grocerystore/dataset/train" \
        --output-dir "$SYNTH" --num-images 600 --seed 0 --overwrite --quiet
fi

# 2. the head: trunk features of the training images cached at 2 levels (float16, ~8 min), class-agnostic
#    proposals from the packaged detector (src/os2d/assets/agnostic_detector_lite0.pt), 3000 steps of 8
#    (image, query) samples x 48 RoIs (~21 min). FL27 training brands + the synthetic shelves; every image with a
#    box of an FL27 validation brand is dropped (exclude_classes, default). Writes $RUNS/coae/coae.pt.
if [ ! -f "$RUNS/coae/coae.pt" ]; then
    if [ -f "$RUNS/coae/checkpoint.pt" ]; then
        os2d train-coae --resume "$RUNS/coae"
    else
        os2d train-coae --config recipes/coae/coae.yaml --output-dir "$RUNS/coae" \
            "box_csvs=[$DATA/flickrlogos27-dev/annotations.csv,$SYNTH/annotations.csv]" \
            "class_csvs=[$DATA/flickrlogos27-dev/class_images.csv,$SYNTH/class_images.csv]"
    fi
fi
cp "$RUNS/coae/coae.pt" src/os2d/assets/coae_lite0.pt

# 3. the measurements (methods table), as for detector-retrieval: --scales 0.71 1 1.41
#    os2d eval --method coae --boxes .../annotations.csv --classes .../class_images.csv ... --scales 0.71 1 1.41
