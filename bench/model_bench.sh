#!/bin/bash
# Dense InterFormer forward+backward speed, Loom vs the PyTorch reference, in one script
# (same machine, same moment, same thread counts): prints both and the ratio Loom / PyTorch.
#
#   bench/model_bench.sh [BUILD_DIR] [CONFIGS] [ITERS]
#     BUILD_DIR  build directory holding bench/model_bench (default: build/cpu)
#     CONFIGS    "small paper" (default) or one of them
#     ITERS      timed steps per run (default 10; 2 untimed warm-up steps)
# Results: JSON under bench/results/ (or $OUT_DIR). Threads: OMP_NUM_THREADS=2 and
# OPENBLAS_NUM_THREADS=2 for both programs (the bench_torch run gets --threads 2). Other
# OpenMP settings (e.g. OMP_WAIT_POLICY) are inherited by both unchanged; on a loaded machine
# spinning OpenMP threads hurt both programs alike, so compare ratios, not absolute numbers.
# Loom's CPU GEMM turns OpenBLAS's own threads off and splits products over its OpenMP team
# (csrc/model/ops/gemm_cpu.cc); PyTorch keeps OPENBLAS_NUM_THREADS=2 beside its OpenMP pool.
# The load average is printed before every program run (the machines are shared).
# Target: Loom >= 2x PyTorch samples/s.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build/cpu}
configs=${2:-small paper}
iters=${3:-10}
out=${OUT_DIR:-$root/bench/results}
mkdir -p "$out"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
bench="$build/bench/model_bench"
if [[ ! -x "$bench" ]]; then
  echo "model_bench.sh: $bench not found (cmake --build $build --target model_bench)" >&2
  exit 2
fi
if ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  echo "model_bench.sh: /usr/bin/python3 cannot import torch; running Loom only" >&2
  "$bench" --config all --iters "$iters" --json "$out/model_bench.json"
  exit 0
fi
echo "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
     "OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-<unset>}"
summary=()
for cfg in $configs; do
  echo "[$cfg] pytorch: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/python3 "$root/tests/reference/bench_torch.py" --config "$cfg" --threads 2 \
    --iters "$iters" --warmup 2 --json "$out/bench_torch_$cfg.json"
  echo "[$cfg] loom: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$bench" --config "$cfg" --iters "$iters" --warmup 2 --json "$out/model_bench_$cfg.json"
  summary+=("$(/usr/bin/python3 - "$out/model_bench_$cfg.json" "$out/bench_torch_$cfg.json" <<'PY'
import json, sys
loom = json.load(open(sys.argv[1]))["results"][0]
torch = json.load(open(sys.argv[2]))
ratio = loom["samples_per_sec"] / torch["samples_per_sec"]
print(f"{loom['config']:6s} loom {loom['samples_per_sec']:9.1f} samples/s   "
      f"pytorch {torch['samples_per_sec']:9.1f} samples/s   ratio {ratio:5.2f}x "
      f"({'meets' if ratio >= 2.0 else 'below'} the 2x target)")
PY
)")
done
echo "---- summary (CPU, 2 threads, fp32, forward+backward; load average at the end" \
     "$(cut -d' ' -f1-3 /proc/loadavg)) ----"
printf '%s\n' "${summary[@]}"
