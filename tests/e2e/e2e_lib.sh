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

# Tiny synthetic data (4000 rows: 3000 train, 1000 test) into $1.
make_tiny_data() {
  cat > tiny_synthetic.pbtxt <<'PBTXT'
name: "tiny" seed: 3 test_fraction: 0.25 block_rows: 128
num_users: 40 num_items: 80 num_categories: 8
context { name: "device" vocabulary_size: 4 zipf: 0.5 }
context { name: "tags" vocabulary_size: 20 max_values: 3 }
num_dense: 2
history { name: "click" max_length: 6 min_length: 0 with_categories: true }
PBTXT
  "$LOOM_DATA" synthetic --config tiny_synthetic.pbtxt --rows 4000 --out "$1" > /dev/null
}

# A small InterFormer over the tiny data (the config of tests/train/train_test_util.h):
# every sharding strategy and sparse optimizer with state.
make_tiny_config() {
  cat > "$1" <<PBTXT
model { embedding_dim: 8 num_dense_features: 2 num_sparse_features: 5 num_sequences: 2
        num_layers: 1 num_heads: 2 num_cls_tokens: 2 num_pma_tokens: 1
        num_recent_tokens: 1 head_hidden_dims: [16] }
embedding {
  seed: 5
  tables { name: "user" num_rows: 41 dim: 8 id_mapping: ID_MAPPING_DIRECT
           optimizer { type: ROWWISE_ADAGRAD learning_rate: 0.05 } }
  tables { name: "item" num_rows: 81 dim: 8 id_mapping: ID_MAPPING_DIRECT
           optimizer { type: ADAM learning_rate: 0.01 } }
  tables { name: "category" num_rows: 9 dim: 8 id_mapping: ID_MAPPING_DIRECT
           optimizer { type: ADAGRAD learning_rate: 0.05 } }
  tables { name: "device" num_rows: 4 dim: 8 optimizer { type: SGD learning_rate: 0.1 } }
  tables { name: "tags" num_rows: 20 dim: 8 optimizer { type: ADAGRAD learning_rate: 0.05 } }
  features { name: "user_id" table: "user" }
  features { name: "item_id" table: "item" }
  features { name: "item_category" table: "category" }
  features { name: "device" table: "device" }
  features { name: "tags" kind: MULTI_HOT table: "tags" pooling: POOLING_MEAN
             max_ids_per_sample: 3 }
  features { name: "click_items" kind: SEQUENCE table: "item" max_length: 6 }
  features { name: "click_categories" kind: SEQUENCE table: "category" max_length: 6 }
  sharding_overrides { table: "user" strategy: TABLE_WISE }
  sharding_overrides { table: "item" strategy: ROW_WISE }
  sharding_overrides { table: "category" strategy: DATA_PARALLEL }
  data_parallel_max_bytes: 0
}
optimizer { type: OPTIMIZER_TYPE_ADAM lr: 0.003 }
data {
  train_files: "$work/data/train/*.loom"
  eval_files: "$work/data/test/*.loom"
  reader { shuffle_buffer_rows: 256 seed: 9 }
}
train { seed: 13 global_batch_size: 32 epochs: 0 max_steps: 20 log_every_steps: 10
        eval_every_steps: 10 eval_local_batch_size: 64
        checkpoint { every_steps: 0 save_at_end: true keep_last: 3 } }
PBTXT
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
