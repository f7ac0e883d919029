#!/usr/bin/env bash
# The BreastMNIST label-fraction comparison (issue 12): MulSupCon / SimCLR / SparK / scratch at fractions 0.1, 0.25, 1.0.
# Run from the repository root: `bash docs/results/breastmnist_fractions/run.sh [WORK]` (WORK default: outputs/fractions).
# Every step resumes: rerun the same command after an interruption (pretraining restarts from its newest checkpoint,
# the protocol trains only the rows results.csv does not hold yet).
set -euo pipefail
WORK=${1:-outputs/fractions}
SHARED=${SHARED:-../shared/data/medmnist}
B=bundles/modan_pretrain
EPOCHS=${EPOCHS:-5}
mkdir -p "$WORK/pretrain_npz"
# 1. the pretraining corpus: the real MedMNIST files without the evaluation set (BreastMNIST) and without the 64^3
#    duplicate of AdrenalMNIST3D: chest X-ray, fundus, CT and MRA shape masks, 10,948 images
for f in pneumoniamnist retinamnist adrenalmnist3d vesselmnist3d; do ln -sf "$(realpath "$SHARED/$f.npz")" "$WORK/pretrain_npz/"; done
[ -f "$WORK/medmnist.json" ] || python -m monai_modan index "$WORK/pretrain_npz" --out "$WORK/medmnist.json"

# 2. the four pretrainings, same budget: 32 px (SparK needs a multiple of its 16 px patch), batch 64, $EPOCHS epochs
pretrain() {  # METHOD OVERLAY [extra overrides...]
  local method=$1 overlay=$2; shift 2
  local out="$WORK/runs/$method"
  [ -f "$out/encoder.pt" ] && return 0
  local last resume=()
  last=$(ls -1 "$out"/checkpoint_epoch=*.pt 2>/dev/null | sort -t= -k2 -n | tail -1 || true)
  [ -n "$last" ] && resume=(--resume_from "$last")
  python -m monai.bundle run --config_file "$overlay" --bundle_root $B --datalist "$WORK/medmnist.json" \
    --image_size 32 --batch_size 64 --epochs "$EPOCHS" --output_dir "$out" --model_file "$WORK/runs/$method.pt" \
    "${resume[@]}" "$@"
}
# one thread each, two pretrainings at a time on a 2-core CPU
( export OMP_NUM_THREADS=1
  pretrain mulsupcon "$B/configs/train.json"
  pretrain simclr "['$B/configs/train.json','$B/configs/simclr.json']" ) &
# SparK: the paper's base lr 2e-4 x B/256 (5e-5 at batch 64) belongs to a 1,600-epoch schedule; for a 5-epoch budget we
# use 10x (base_lr 2e-3, lr 5e-4), set before the comparison and not tuned on BreastMNIST
( export OMP_NUM_THREADS=1
  pretrain spark "['$B/configs/train.json','$B/configs/spark.json']" --base_lr 0.002
  pretrain hybrid "['$B/configs/train.json','$B/configs/hybrid.json']" ) &
wait

# 3. the protocol: 5 inits x {fine-tuning, linear probing, frozen-feature logistic regression} x fractions
#    {0.1, 0.25, 1.0} x REPEATS (2 fitted the session's CPU time on a shared 2-core machine) x 5 folds
python -m monai_modan experiment --task breastmnist="$SHARED/breastmnist.npz" --image-size 32 \
  --pretrain-runs "$WORK/runs" --label-fractions 0.1 0.25 1.0 --repeats "${REPEATS:-2}" --logistic --workers 2 \
  --umap-datalist "$WORK/medmnist.json" --out "$WORK/breastmnist_fractions"
