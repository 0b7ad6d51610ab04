# Helpers of the end-to-end test scripts (sourced). The scripts get the programs from the
# environment ctest sets (LOOM_TRAIN, LOOM_CKPT, LOOM_DATA: paths of the built tools) and
# work in a fresh temporary directory that is removed on exit (kept with LOOM_KEEP_TMP=1).
set -euo pipefail

: "${LOOM_TRAIN:?set LOOM_TRAIN to the loom_train binary}"
: "${LOOM_CKPT:?set LOOM_CKPT to the loom_ckpt binary}"
: "${LOOM_DATA:?set LOOM_DATA to the loom_data binary}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export GLOG_logtostderr=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

work=$(mktemp -d "${TMPDIR:-/tmp}/loom-e2e-XXXXXX")
cleanup() {
  if [[ "${LOOM_KEEP_TMP:-0}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
note() { echo "== $*"; }

# ranks N then the loom_train arguments; output goes to the log file named by $log.
train_np() {
  local np=$1
  shift
  mpirun -np "$np" --oversubscribe "$LOOM_TRAIN" "$@"
}

# The value of key=... in loom_train's summary line ("loom train: done: ...").
summary_field() {
  local file=$1 key=$2
  grep '^loom train: done:' "$file" | tail -1 | tr ' ' '\n' | sed -n "s/^$key=//p"
}

# Tiny synthetic data (tests/data/tiny_synthetic.pbtxt; 4000 rows: 3000 train, 1000 test) into $1.
make_tiny_data() {
  : "${LOOM_SOURCE_DIR:?set LOOM_SOURCE_DIR to the repository root}"
  "$LOOM_DATA" synthetic --config "$LOOM_SOURCE_DIR/tests/data/tiny_synthetic.pbtxt" --rows 4000 \
    --out "$1" > /dev/null
}

# The small InterFormer of tests/data/tiny_train.pbtxt over the data of make_tiny_data in
# $work/data, written to $1.
make_tiny_config() {
  : "${LOOM_SOURCE_DIR:?set LOOM_SOURCE_DIR to the repository root}"
  sed "s|@DATA@|$work/data|g" "$LOOM_SOURCE_DIR/tests/data/tiny_train.pbtxt" > "$1"
}

# The tensor files of two checkpoints are identical, byte for byte.
same_tensors() {
  local a=$1 b=$2 f n=0
  for f in "$a"/*.bin; do
    cmp -s "$f" "$b/$(basename "$f")" || fail "$(basename "$f") differs between $a and $b"
    n=$((n + 1))
  done
  ((n > 0)) || fail "no tensor files in $a"
  [[ $(ls "$a"/*.bin | wc -l) == $(ls "$b"/*.bin | wc -l) ]] || fail "file lists differ"
  echo "identical: $n tensor files ($(cat "$a"/*.bin | md5sum | cut -c1-16))"
}
