#!/usr/bin/env bash
# The README's main command: end to end on the built-in toy dataset.
# generate -> plan/preprocess -> train Stage I and Stage II briefly -> predict -> evaluate.
# Budget knobs (environment): DEMO_EPOCHS, DEMO_ITERS, DEMO_VAL_ITERS, DEMO_CASES, DEMO_STEPS.
# Sized to finish in under 3 minutes on an idle 2-core CPU (documentation/results.md, "README demo"): the
# end-of-stage validation is skipped (step 4 predicts and step 5 scores the same validation cases), the
# validation loss uses 2 batches per epoch, and prediction runs without mirroring TTA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
WORK=${DEMO_DIR:-$PWD/demo_output}
export diffoseg_raw=${diffoseg_raw:-$WORK/raw}
export diffoseg_preprocessed=${diffoseg_preprocessed:-$WORK/preprocessed}
export diffoseg_results=${diffoseg_results:-$WORK/results}
ID=${DEMO_DATASET_ID:-901}
EPOCHS=${DEMO_EPOCHS:-8}
ITERS=${DEMO_ITERS:-25}
CASES=${DEMO_CASES:-30}
VAL_ITERS=${DEMO_VAL_ITERS:-2}
STEPS=${DEMO_STEPS:-25}

echo "== 1/5 generate the toy dataset (2D, $CASES cases, 4 raters with known styles)"
diffoseg_generate_toy_dataset -d "$ID" --dim 2 --cases "$CASES" --raters 4 --overwrite
NAME=$(cd "$diffoseg_raw" && ls -d Dataset${ID}_* | head -n1)

echo "== 2/5 fingerprint, plan, preprocess"
diffoseg_plan_and_preprocess -d "$ID" -c 2d --verify_dataset_integrity -np 2

echo "== 3/5 train fold 0: Stage I (consensus) then Stage II (expert prompts)"
diffoseg_train "$ID" 2d 0 --stage both --num_epochs "$EPOCHS" --iterations_per_epoch "$ITERS" \
    --val_iterations "$VAL_ITERS" --no_final_validation -device cpu --overwrite

echo "== 4/5 predict the fold's validation cases"
VAL_IN=$WORK/val_images
.venv/bin/python -m diffoseg_auto.cli.fold_images "$ID" 0 "$VAL_IN"
diffoseg_predict -i "$VAL_IN" -o "$WORK/predictions" -d "$ID" -c 2d -f 0 --save_samples -device cpu \
    --sampling_steps "$STEPS" --disable_tta --overwrite

echo "== 5/5 evaluate the fold's held-out cases against the raters"
diffoseg_evaluate -ref "$diffoseg_raw/$NAME/labelsTr" -pred "$WORK/predictions" -f 0 -o "$WORK/predictions/summary.json"
echo "Done. Everything is in $WORK (progress.png: $diffoseg_results/$NAME/*/fold_0/stage*/progress.png)"
