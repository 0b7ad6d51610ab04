#!/usr/bin/env bash
# The quickstart's data, train and compare steps (launcher/quickstart.sh) on the built tools:
# 200,000 synthetic rows from configs/data/synthetic_quickstart.pbtxt, configs/quickstart.pbtxt
# trained for one epoch on 2 CPU ranks; the final test AUC must be within 0.02 of the
# generator's oracle (Bayes-optimal) AUC. About 1.5 CPU-minutes per rank.
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
: "${LOOM_SOURCE_DIR:?set LOOM_SOURCE_DIR to the repository root}"
note "generating the quickstart data"
"$LOOM_DATA" synthetic --config "$LOOM_SOURCE_DIR/configs/data/synthetic_quickstart.pbtxt" \
  --rows 200000 --out qs > data.log 2>&1 || { tail -20 data.log; fail "loom data synthetic"; }
note "training configs/quickstart.pbtxt on 2 ranks"
start=$SECONDS
train_np 2 --config "$LOOM_SOURCE_DIR/configs/quickstart.pbtxt" --no-resume \
  --set "data { train_files: \"$work/qs/train/*.loom\" eval_files: \"$work/qs/test/*.loom\" }" \
  --set "train { run_dir: \"$work/run\" }" > train.log 2>&1 || { tail -40 train.log; fail "training"; }
oracle=$(sed -n 's/.*"oracle_auc": *\([0-9.]*\).*/\1/p' qs/synthetic.json)
auc=$(summary_field train.log auc)
echo "final test AUC $auc, oracle AUC $oracle, training $((SECONDS - start)) s"
awk -v a="$auc" -v o="$oracle" 'BEGIN { exit !(o - a <= 0.02) }' ||
  fail "final AUC $auc is more than 0.02 below the oracle $oracle"
echo "PASS: quickstart AUC $auc within 0.02 of the oracle $oracle"
