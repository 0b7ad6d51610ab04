#!/usr/bin/env bash
# End-to-end check of the checkpoint tools (docs/checkpoint-format.md, "Conversion tools") on a
# real `loom train` run with the quickstart model on synthetic data:
#   1. train with 4 ranks to step 2K, checkpoints at K and 2K;
#   2. reshard step 2K to 2 ranks, merge it to 1, reshard it to 3 (uneven): the predictions on
#      the test split at 4, 2, 1 and 3 ranks are bit-identical (each rank forwards one sample
#      at a time, so the batching is the same at every world size: the dense GEMMs round
#      differently for different batch sizes, whatever the weights);
#   3. resume from step K resharded to 2 ranks (default reader positions: the epoch restarts):
#      the loss after the resume follows the 4-rank run (mean within 5%, well below the
#      untrained loss); and exactly: 4 ranks reading 12 data slices, resharded to 3 ranks
#      reading the same 12 slices (positions kept exactly): every logged loss within 1e-3
#      relative of the 4-rank run's (only the dense gradient sums round differently);
#   4. export to safetensors: the PyTorch reference (tests/reference/load_exported.py)
#      reproduces Loom's logits within 1e-5 relative; the int8-rowwise export's AUC is within
#      0.001 of the f32 export's;
#   5. import of the f32 export into the checkpoint gives the checkpoint back (diff: identical);
#   6. a corrupted byte, a truncated file and a missing shard each make reshard fail with a
#      message naming the file, and write nothing.
#
# Usage: tests/e2e/ckpt_reshard_e2e.sh BUILD_DIR [WORK_DIR]
# Needs BUILD_DIR/tools/{loom_train,loom_data,loom_ckpt}, BUILD_DIR/tests/train/train_ckpt_predict
# and /usr/bin/python3 with torch and numpy.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(cd "${1:?usage: ckpt_reshard_e2e.sh BUILD_DIR [WORK_DIR]}" && pwd)"
work="${2:-$(mktemp -d /tmp/loom_ckpt_e2e_XXXXXX)}"
mkdir -p "$work"
py=/usr/bin/python3

train="$build/tools/loom_train"
datagen="$build/tools/loom_data"
predict="$build/tests/train/train_ckpt_predict"
ckpt="$build/tools/loom_ckpt"
for exe in "$train" "$datagen" "$predict" "$ckpt"; do
  [[ -x "$exe" ]] || { echo "FAIL: $exe not built"; exit 1; }
done
"$py" -c 'import torch, numpy' 2> /dev/null || { echo "FAIL: $py lacks torch or numpy"; exit 1; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export GLOG_logtostderr=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
run() {  # run NP EXE ARGS...
  local np="$1"; shift
  mpirun -np "$np" --oversubscribe -x GLOG_logtostderr -x OMP_NUM_THREADS \
    -x OPENBLAS_NUM_THREADS "$@"
}
fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }

K=60
STEPS=$((2 * K))
# 4800 training rows (100 steps of 48 per epoch), 1200 test rows.
step "data"
"$datagen" synthetic --config "$repo/configs/data/synthetic_quickstart.pbtxt" --rows 6000 \
  --out "$work/data" > "$work/data.log" 2>&1 || { cat "$work/data.log"; fail "loom data"; }

settings() {  # settings RUN_DIR CHECKPOINT_DIR
  echo "data { train_files: '$work/data/train/*.loom' eval_files: '$work/data/test/*.loom' }
        model { num_layers: 1 head_hidden_dims: [32] }
        optimizer { lr: 0.004 }
        train { global_batch_size: 48 eval_local_batch_size: 0 epochs: 0 max_steps: $STEPS
                log_every_steps: 5 run_dir: '$1'
                checkpoint { dir: '$2' every_steps: $K save_at_end: true keep_last: 0 } }"
}
cfg="$repo/configs/quickstart.pbtxt"

# ---- 1. Train with 4 ranks.
step "train 4 ranks to step $STEPS"
run 4 "$train" --config "$cfg" --set "$(settings "$work/run4" "$work/ck4")" --no-resume \
  > "$work/train4.log" 2>&1 || { tail -20 "$work/train4.log"; fail "4-rank training"; }
ckK="$work/ck4/$(printf 'step-%012d' $K)"
ck2K="$work/ck4/$(printf 'step-%012d' $STEPS)"
[[ -f "$ckK/manifest.pb" && -f "$ck2K/manifest.pb" ]] || fail "checkpoints missing in $work/ck4"

# ---- 2. Reshard to 2, 1, 3 ranks: bit-identical predictions.
step "reshard step $STEPS: 4 -> 2, 2 -> 1 (merge), 4 -> 3"
"$ckpt" reshard "$ck2K" --world-size 2 --out "$work/c2" > "$work/reshard2.log" 2>&1 ||
  { cat "$work/reshard2.log"; fail "reshard 4 -> 2"; }
"$ckpt" merge "$work/c2" --out "$work/c1" > "$work/merge.log" 2>&1 ||
  { cat "$work/merge.log"; fail "merge"; }
"$ckpt" reshard "$ck2K" --world-size 3 --out "$work/c3" > "$work/reshard3.log" 2>&1 ||
  { cat "$work/reshard3.log"; fail "reshard 4 -> 3"; }
grep -q "reshard: tables" "$work/reshard3.log" || fail "reshard printed no progress line"
"$ckpt" diff "$ck2K" "$work/c3" --quiet > "$work/diff3.log" 2>&1 ||
  { cat "$work/diff3.log"; fail "diff: the 3-rank checkpoint differs from the 4-rank one"; }

for np in 4 2 1 3; do
  dir="$work/ck4"; [[ $np != 4 ]] && dir="$work/c$np"
  run "$np" "$predict" --config "$cfg" --set "$(settings "$work/predict$np" "$dir")" \
    --checkpoint "$dir" --out "$work/pred$np.safetensors" --batch 1 > "$work/pred$np.log" 2>&1 ||
    { tail -20 "$work/pred$np.log"; fail "predictions at $np ranks"; }
done
"$py" - "$work" "$repo" << 'EOF' || fail "predictions differ between world sizes"
import sys
work, repo = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo + "/tests/reference")
import numpy as np
import safetensors_io
base = safetensors_io.load(f"{work}/pred4.safetensors")[0]["logits"]
ok = True
for np_ in (2, 1, 3):
    other = safetensors_io.load(f"{work}/pred{np_}.safetensors")[0]["logits"]
    same = base.shape == other.shape and np.array_equal(base.view(np.uint32), other.view(np.uint32))
    print(f"  {len(other)} predictions at {np_} ranks vs 4 ranks: "
          f"{'bit-identical' if same else 'DIFFERENT (max %g)' % np.abs(base - other).max()}")
    ok = ok and same
sys.exit(0 if ok else 1)
EOF

# ---- 3. Resume from a resharded checkpoint.
step "resume: step $K resharded 4 -> 2 (restart-epoch positions), train to $STEPS"
"$ckpt" reshard "$ckK" --world-size 2 --out "$work/r2" --quiet > "$work/reshardK.log" 2>&1 ||
  { cat "$work/reshardK.log"; fail "reshard step $K"; }
run 2 "$train" --config "$cfg" --set "$(settings "$work/run2" "$work/r2")" --resume \
  > "$work/train2.log" 2>&1 || { tail -20 "$work/train2.log"; fail "resumed 2-rank training"; }
grep -q "resumed from $work/r2/" "$work/train2.log" || fail "the 2-rank run did not resume"

step "resume exactly: 4 ranks reading 12 data slices, step $K resharded to 3 ranks"
run 4 "$train" --config "$cfg" --set "$(settings "$work/run4s" "$work/ck4s")" --no-resume \
  --data-slices 12 > "$work/train4s.log" 2>&1 || { tail -20 "$work/train4s.log"; fail "4-rank training, 12 slices"; }
"$ckpt" reshard "$work/ck4s/$(printf 'step-%012d' $K)" --world-size 3 --out "$work/r3s" --quiet \
  > "$work/reshardK3.log" 2>&1 || { cat "$work/reshardK3.log"; fail "reshard step $K to 3"; }
run 3 "$train" --config "$cfg" --set "$(settings "$work/run3s" "$work/r3s")" --resume \
  --data-slices 12 > "$work/train3s.log" 2>&1 || { tail -20 "$work/train3s.log"; fail "resumed 3-rank training"; }

"$py" - "$work" "$K" << 'EOF' || fail "the loss curve does not continue after resharding"
import json, sys
work, k = sys.argv[1], int(sys.argv[2])
def losses(run):
    out = {}
    with open(f"{work}/{run}/train_log.jsonl") as f:
        for line in f:
            r = json.loads(line)
            out[r["step"]] = r["loss"]
    return out
a, b = losses("run4"), losses("run2")
after = sorted(s for s in b if s > k)
if not after or any(s not in a for s in after):
    print("  missing loss lines", sorted(a), sorted(b)); sys.exit(1)
first = a[min(a)]
mean_a = sum(a[s] for s in after) / len(after)
mean_b = sum(b[s] for s in after) / len(after)
rel = abs(mean_b - mean_a) / mean_a
print(f"  untrained loss {first:.4f}; steps {after[0]}..{after[-1]}: 4 ranks {mean_a:.4f}, "
      f"resharded 2 ranks {mean_b:.4f} (relative difference {rel:.4f})")
ok = rel <= 0.05 and mean_b < 0.95 * first
a, b = losses("run4s"), losses("run3s")
after = sorted(s for s in b if s > k)
worst = max(abs(b[s] - a[s]) / a[s] for s in after)
print(f"  12 slices: steps {after[0]}..{after[-1]}: max relative loss difference 4 vs resharded "
      f"3 ranks {worst:.2e}")
ok = ok and worst <= 1e-3
sys.exit(0 if ok else 1)
EOF

# ---- 4. Export: PyTorch reproduces Loom; int8 AUC.
step "export f32 and int8-rowwise; the PyTorch reference predicts"
"$ckpt" export "$ck2K" --format safetensors --out "$work/model_f32.safetensors" --quiet \
  > "$work/export.log" 2>&1 || { cat "$work/export.log"; fail "export f32"; }
"$ckpt" export "$work/c3" --format safetensors --out "$work/model_int8.safetensors" \
  --quantize-embeddings int8-rowwise --quiet >> "$work/export.log" 2>&1 ||
  { cat "$work/export.log"; fail "export int8"; }
"$py" "$repo/tests/reference/load_exported.py" "$work/model_f32.safetensors" \
  --batch "$work/pred4.safetensors" --check-logits --rtol 1e-5 --auc || fail "PyTorch vs Loom logits"
"$py" "$repo/tests/reference/load_exported.py" "$work/model_int8.safetensors" \
  --batch "$work/pred4.safetensors" --auc-against "$work/model_f32.safetensors" \
  --max-auc-diff 0.001 || fail "int8 AUC"

# ---- 5. Import round trip.
step "import the f32 export into step $STEPS"
"$ckpt" import "$work/model_f32.safetensors" --template "$ck2K" --out "$work/imported" --quiet \
  > "$work/import.log" 2>&1 || { cat "$work/import.log"; fail "import"; }
"$ckpt" diff "$ck2K" "$work/imported" --quiet > "$work/diff_import.log" 2>&1 ||
  { cat "$work/diff_import.log"; fail "the imported checkpoint differs"; }

# ---- 6. Damage.
step "damaged checkpoints"
expect_failure() {  # expect_failure DIR TEXT: reshard DIR fails naming TEXT, writes nothing
  local out="$work/damaged_out"
  rm -rf "$out"
  if "$ckpt" reshard "$1" --world-size 2 --out "$out" --quiet > "$work/damaged.log" 2>&1; then
    fail "reshard of a damaged checkpoint succeeded"
  fi
  grep -qF -- "$2" "$work/damaged.log" || { cat "$work/damaged.log"; fail "no '$2' in the error"; }
  [[ ! -e "$out" || -z "$(ls -A "$out")" ]] || fail "a failed reshard left files in $out"
  echo "  $(head -c 300 "$work/damaged.log")"
}
name="$(printf 'step-%012d' $STEPS)"
cp -r "$ck2K" "$work/bad1"
size=$(stat -c %s "$work/bad1/embedding-r00001.bin")
printf '\xff' | dd of="$work/bad1/embedding-r00001.bin" bs=1 seek=$((size / 2)) conv=notrunc 2> /dev/null
expect_failure "$work/bad1" "embedding-r00001.bin"
grep -q "corrupted" "$work/damaged.log" || fail "the corrupted byte is not reported as corruption"
cp -r "$ck2K" "$work/bad2"
truncate -s $((size - 7)) "$work/bad2/embedding-r00001.bin"
expect_failure "$work/bad2" "bad2/embedding-r00001.bin: size $((size - 7)), the manifest says $size (truncated)"
cp -r "$ck2K" "$work/bad3"
rm "$work/bad3/embedding-r00002.bin"
expect_failure "$work/bad3" "bad3/embedding-r00002.bin: missing (written by rank 2)"

echo "PASS: ckpt_reshard_e2e ($work)"
if [[ $# -lt 2 ]]; then rm -rf "$work"; fi
