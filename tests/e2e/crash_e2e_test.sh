#!/usr/bin/env bash
# A rank killed while a checkpoint is being written (SIGKILL halfway through its data file,
# LOOM_FAULT_INJECT) brings the job down; the previous checkpoint stays valid, the broken one
# is invisible, and --resume continues from the previous one to the same weights as an
# uninterrupted run. The same for a kill of rank 0 between the manifest and the commit.
# Damaged checkpoints (a flipped byte, a truncated file, a missing shard) are reported by
# `loom ckpt inspect --verify` with the file and the fault, and skipped by --resume.
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
make_tiny_data data
make_tiny_config tiny.pbtxt
ck() { printf "step-%012d" "$1"; }
base=(--config tiny.pbtxt --set "train { checkpoint { every_steps: 10 } }")

note "reference: 30 uninterrupted steps"
train_np 2 "${base[@]}" --set 'train { max_steps: 30 run_dir: "ref" }' > ref.log 2>&1 ||
  { tail -30 ref.log; fail "reference run"; }

for point in "checkpoint_write:step=20:rank=1" "checkpoint_commit:step=20:rank=0"; do
  run="crash_${point%%:*}"
  note "$point: the job is killed while saving step 20"
  if LOOM_FAULT_INJECT="$point" train_np 2 "${base[@]}" \
      --set "train { max_steps: 30 run_dir: \"$run\" }" > "$run.log" 2>&1; then
    fail "the job survived the injected crash ($point)"
  fi
  grep -q "LOOM_FAULT_INJECT: killing this process" "$run.log" || { tail -20 "$run.log"; fail "no injected crash"; }
  [[ -d "$run/checkpoints/$(ck 10)" ]] || fail "step 10 checkpoint missing"
  [[ ! -e "$run/checkpoints/$(ck 20)" ]] || fail "a partial step-20 checkpoint is visible"
  ls -a "$run/checkpoints" | grep -q '^\.tmp-step-' || fail "expected the crashed save's .tmp directory"
  "$LOOM_CKPT" inspect "$run/checkpoints/$(ck 10)" --verify > "$run.inspect" ||
    { cat "$run.inspect"; fail "step 10 is not valid after the crash"; }
  note "$point: --resume continues from step 10"
  train_np 2 "${base[@]}" --resume --set "train { max_steps: 30 run_dir: \"$run\" }" \
    > "$run.resume.log" 2>&1 || { tail -30 "$run.resume.log"; fail "resume after crash"; }
  [[ "$(summary_field "$run.resume.log" resumed_from)" == "$run/checkpoints/$(ck 10)" ]] ||
    fail "resumed from '$(summary_field "$run.resume.log" resumed_from)'"
  ls -a "$run/checkpoints" | grep -q '^\.tmp-' && fail "the crashed save's .tmp directory was not cleaned up"
  same_tensors "ref/checkpoints/$(ck 30)" "$run/checkpoints/$(ck 30)"
done

note "damaged checkpoints are named and skipped"
cp -r ref dmg
flip() {  # flips one byte at offset $2 of file $1
  python3 - "$1" "$2" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x5a]))
PY
}
flip "dmg/checkpoints/$(ck 30)/dense.bin" 200
out=$("$LOOM_CKPT" inspect "dmg/checkpoints/$(ck 30)" --verify 2>&1) && fail "corruption not detected"
grep -q "$(ck 30)/dense.bin: CRC-32C .* (corrupted)" <<< "$out" || { echo "$out"; fail "message for a flipped byte"; }
truncate -s -7 "dmg/checkpoints/$(ck 20)/embedding-r00001.bin"
out=$("$LOOM_CKPT" inspect "dmg/checkpoints/$(ck 20)" 2>&1) && fail "truncation not detected"
grep -q "$(ck 20)/embedding-r00001.bin: size .* (truncated)" <<< "$out" || { echo "$out"; fail "message for a truncated file"; }
cp -r "dmg/checkpoints/$(ck 10)" "dmg/checkpoints/$(ck 15)"
rm "dmg/checkpoints/$(ck 15)/embedding-r00000.bin"
out=$("$LOOM_CKPT" inspect "dmg/checkpoints/$(ck 15)" 2>&1) && fail "missing shard not detected"
grep -q "$(ck 15)/embedding-r00000.bin: missing (written by rank 0)" <<< "$out" || { echo "$out"; fail "message for a missing shard"; }
echo "bad" > "dmg/checkpoints/$(ck 15)/manifest.crc32c"
out=$("$LOOM_CKPT" inspect "dmg/checkpoints/$(ck 15)" 2>&1) && fail "bad manifest checksum not detected"
grep -q "manifest.crc32c: malformed" <<< "$out" || { echo "$out"; fail "message for a bad manifest"; }
"$LOOM_CKPT" list dmg > list.txt && fail "list should report damage"
grep -c DAMAGED list.txt | grep -q '^2$' || { cat list.txt; fail "list: expected 2 damaged checkpoints (sizes)"; }
"$LOOM_CKPT" list dmg --verify > list.txt && fail "list --verify should report damage"
grep -c DAMAGED list.txt | grep -q '^3$' || { cat list.txt; fail "list --verify: expected 3 damaged checkpoints"; }
note "--resume skips the damaged ones and continues from step 10"
train_np 2 "${base[@]}" --resume --set 'train { max_steps: 30 run_dir: "dmg" }' > dmg.log 2>&1 ||
  { tail -30 dmg.log; fail "resume past damaged checkpoints"; }
[[ "$(summary_field dmg.log resumed_from)" == "dmg/checkpoints/$(ck 10)" ]] ||
  fail "resumed from '$(summary_field dmg.log resumed_from)'"
grep -q "is damaged, trying an older one" dmg.log || fail "no warning about the damaged checkpoints"
echo "PASS: crashes during a save leave the previous checkpoint valid; damage is named and skipped"
