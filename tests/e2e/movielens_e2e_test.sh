#!/usr/bin/env bash
# Real data: MovieLens 100K (read in place from ../shared/data, never copied into the
# repository) converted by `loom data convert-movielens` into a temporary directory, then
# configs/movielens100k.pbtxt trained for one epoch on 2 CPU ranks: InterFormer, d = 32, L = 2,
# 2 heads, global batch 512, Adam 1e-3. The test AUC must be at least 0.740 (docs/results.md).
# With LOOM_E2E_BASELINE=1 the DLRM-style baseline is trained too (no floor; it is reported).
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
: "${LOOM_SOURCE_DIR:?set LOOM_SOURCE_DIR to the repository root}"
src="${LOOM_SHARED_DATA:-${LOOM_SHARED_DATA_DIR:-$LOOM_SOURCE_DIR/../shared/data}}/movielens-100k"
[[ -f "$src/u.data" ]] || fail "MovieLens 100K not found in $src (set LOOM_SHARED_DATA to the folder holding movielens-100k/)"
readonly kFloor=0.740

note "converting $src"
"$LOOM_DATA" convert-movielens --variant 100k --input "$src" --out ml > convert.log 2>&1 ||
  { tail -20 convert.log; fail "convert-movielens"; }
paths="data { train_files: \"$work/ml/train/*.loom\" eval_files: \"$work/ml/test/*.loom\" }"

note "training the InterFormer (1 epoch, 2 ranks)"
train_np 2 --config "$LOOM_SOURCE_DIR/configs/movielens100k.pbtxt" --no-resume \
  --set "$paths" --set "train { run_dir: \"$work/interformer\" }" > interformer.log 2>&1 ||
  { tail -40 interformer.log; fail "training failed"; }
auc=$(summary_field interformer.log auc)
logloss=$(summary_field interformer.log logloss)
echo "InterFormer: test AUC $auc, LogLoss $logloss (floor $kFloor)"
awk -v a="$auc" -v f="$kFloor" 'BEGIN { exit !(a >= f) }' || fail "test AUC $auc is below $kFloor"

if [[ "${LOOM_E2E_BASELINE:-0}" == 1 ]]; then
  note "training the DLRM-style baseline (1 epoch, 2 ranks)"
  train_np 2 --config "$LOOM_SOURCE_DIR/configs/movielens100k.pbtxt" --no-resume \
    --model dlrm_baseline --set "$paths" --set "train { run_dir: \"$work/dlrm\" }" \
    > dlrm.log 2>&1 || { tail -40 dlrm.log; fail "baseline training failed"; }
  echo "DLRM baseline: test AUC $(summary_field dlrm.log auc), LogLoss $(summary_field dlrm.log logloss)"
fi
echo "PASS: MovieLens 100K, InterFormer test AUC $auc >= $kFloor"
