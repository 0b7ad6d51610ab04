#!/usr/bin/env bash
# Exact resume across processes (2 CPU ranks): N steps + checkpoint, then a fresh mpirun that
# resumes and runs N more, gives tensor files (all dense parameters, dense optimizer state,
# embedding shards with their optimizer state) bit-identical to 2N uninterrupted steps. The
# 2N steps cross an epoch end and several evaluations.
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
n=60
make_tiny_data data
make_tiny_config tiny.pbtxt

note "uninterrupted: $((2 * n)) steps"
train_np 2 --config tiny.pbtxt --set "train { max_steps: $((2 * n)) run_dir: \"full\" }" \
  > full.log 2>&1 || { tail -30 full.log; fail "uninterrupted run failed"; }
note "first half: $n steps"
train_np 2 --config tiny.pbtxt --set "train { max_steps: $n run_dir: \"split\" }" \
  > half1.log 2>&1 || { tail -30 half1.log; fail "first half failed"; }
note "second half: a new job resumes"
train_np 2 --config tiny.pbtxt --resume --set "train { max_steps: $((2 * n)) run_dir: \"split\" }" \
  > half2.log 2>&1 || { tail -30 half2.log; fail "second half failed"; }
resumed=$(summary_field half2.log resumed_from)
[[ "$resumed" == "split/checkpoints/step-$(printf %012d $n)" ]] || fail "resumed from '$resumed'"

final=step-$(printf %012d $((2 * n)))
same_tensors "full/checkpoints/$final" "split/checkpoints/$final"
a=$(summary_field full.log auc) b=$(summary_field half2.log auc)
[[ "$a" == "$b" ]] || fail "final AUC $a (uninterrupted) vs $b (resumed)"
"$LOOM_CKPT" inspect "split/checkpoints/$final" --verify > inspect.txt || { cat inspect.txt; fail "inspect --verify"; }
grep -q "verify (sizes and CRC-32C of every file and tensor): OK" inspect.txt || fail "inspect output"
echo "PASS: resume after $n steps is bit-identical to $((2 * n)) uninterrupted steps (AUC $a)"
