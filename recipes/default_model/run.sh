#!/usr/bin/env bash
# How the shipped default model (os2d-lite0-v2) was made, step by step, on a 2-core CPU (~4 h in all).
# Run from the repository root with ../shared/data present:  bash recipes/default_model/run.sh
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS/synth"

# 1. class images of the 81 Grocery Store products (iconic photos), in the dataset's class order
python recipes/grocery_classes.py "$DATA" "$RUNS/synth/classes.csv"

# 2. 600 synthetic shelves / scenes on Grocery Store TRAIN photos (~3 min)
os2d synth --class-images "$RUNS/synth/classes.csv" --backgrounds "$DATA/grocerystore/dataset/train" \
    --output-dir "$RUNS/synth/out" --num-images 600 --seed 0 --overwrite

# 3. TransformNet pretraining on Grocery Store photos, no labels (~28 min + pair generation)
os2d pretrain-transform --images "$DATA/grocerystore/dataset/train" --eval-images "$DATA/grocerystore/dataset/val" \
    --output-dir "$RUNS/pretrain-transform" --num-pairs 2000 --eval-pairs 250 --epochs 5 --lr 7e-4 --seed 0

# 4. training data: FL27 dev boxes of the 14 training brands + the synthetic images
python recipes/default_model/make_train_csv.py --fl27 "$DATA/flickrlogos27-dev" --synth "$RUNS/synth/out" \
    --out "$RUNS/default-model"

# 5. OS2D training (1400 steps, ~58 min): backbone frozen except its last 3 blocks
os2d train --config recipes/default_model/train.yaml \
    "train_data.annotations=$RUNS/default-model/train_boxes.csv" \
    "train_data.classes=$RUNS/default-model/train_classes.csv" \
    "init.transform=$RUNS/pretrain-transform/transform_net.pt" "output_dir=$RUNS/default-model/run"

# 6. stage 2 (1300 steps, ~49 min): from stage 1, lr 3e-4, last 5 backbone blocks trained
os2d train --config recipes/default_model/train_stage2.yaml \
    "train_data.annotations=$RUNS/default-model/train_boxes.csv" \
    "train_data.classes=$RUNS/default-model/train_classes.csv" \
    "init.weights=$RUNS/default-model/run/final.pt" "output_dir=$RUNS/default-model/stage2"

# 7. the shipping rule, on Grocery Store val photos (seen products, new scenes): stage 2 ships if its mAP is at
#    least stage 1's + 1.0 (it was 76.6 vs 73.3). The FL27 held-out brands and the demo shelf are not used.
os2d synth --class-images "$DATA/grocerystore/dataset/iconic-images-and-descriptions" \
    --backgrounds "$DATA/grocerystore/dataset/val" --output-dir "$RUNS/synth-grocery-eval" \
    --num-images 40 --image-size 768 --max-classes 20 --seed 11 --overwrite
for stage in run stage2; do
    os2d eval --boxes "$RUNS/synth-grocery-eval/annotations.csv" --classes "$RUNS/synth-grocery-eval/class_images.csv" \
        --image-dir "$RUNS/synth-grocery-eval" --weights "$RUNS/default-model/$stage/final.pt" \
        --verify-rescore 0 --output-dir "$RUNS/default-model/$stage/synth-val" --quiet --no-plots
done

# 8. stage 2's file (the default until stage 3): inference-only, float16 (4.8 MB)
os2d weights compact "$RUNS/default-model/stage2/final.pt" -o src/os2d/assets/os2d_lite0_v2.pt --force
# 8b. stage 3 (6000 steps, ~71 min with bf16 + positives-only TransformNet gradient), its rule, calibration and
#     the shipped file. Its run.sh starts from stage 2 as committed in 85e26b3 (equal to step 8's file when the
#     steps above reproduce it); edit its step 0 to start from this run's file instead. The packaged detector and
#     CoAE heads of the baselines are trained on the shipped trunk: recipes/detector_retrieval, then recipes/coae.
bash recipes/longer_training/run.sh

# 9. the model card's numbers
python benchmarks/fl27_table.py --scales 1.0
python benchmarks/demo_shelf.py --weights default efficientnet_lite0-imagenet --methods os2d sliding-ar sift
