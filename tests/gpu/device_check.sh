#!/usr/bin/env bash
# The GPU check: one prepared run on a machine with a GPU (nvcc there, no internet, 16 cores).
#
#   tests/gpu/device_check.sh [--build-dir DIR] [--jobs N] [--budget SECONDS]
#
# 1. configures a fresh build (LOOM_WITH_CUDA=ON, LOOM_CUDA_ARCHITECTURES=90, Release),
# 2. builds everything (-j16),
# 3. runs every CUDA test (ctest -L cuda) and the communicator tests (ctest -R '^comm_', the
#    MPI and NCCL ones not already labelled cuda),
# 4. runs every program in the build's bench/ folder that takes --device, as
#    `<bench> --device cuda [--json $OUT/bench/<name>.json]` (--json when its --help has it),
# 5. prints a summary table (also written to $OUT/device_check_summary.txt).
#
# Every step runs under `timeout`; the whole run stays inside --budget (default 470 s, under
# 8 minutes). Exit status 1 when anything fails, times out, or is SKIPPED: on a GPU machine no
# CUDA test may skip. Logs go to $OUT (when set; else <build-dir>/device_check/).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir="$root/build/device-check"
jobs=16
budget=470
while (($# > 0)); do
  case "$1" in
    --build-dir | --jobs | --budget)
      [[ $# -ge 2 ]] || {
        echo "device_check: $1 needs a value" >&2
        exit 2
      }
      case "$1" in
        --build-dir) build_dir=$2 ;;
        --jobs) jobs=$2 ;;
        --budget) budget=$2 ;;
      esac
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "device_check: unknown argument '$1' (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done
cd "$root"

build_dir=$(realpath -m "$build_dir")
if [[ "$build_dir" == "/" || "$build_dir" == "$root" || "$build_dir" == "$HOME" ]]; then
  echo "device_check: refusing to use $build_dir as the (fresh, deleted first) build dir" >&2
  exit 2
fi
rm -rf "$build_dir" # a fresh build: nothing left over from another configuration
out_dir=${OUT:-$build_dir/device_check}
mkdir -p "$out_dir"
readonly summary_file="$out_dir/device_check_summary.txt"
readonly start=$SECONDS

rows=()   # "name|status|seconds|detail"
failed=0
add_row() { # name status seconds detail
  rows+=("$1|$2|$3|$4")
  if [[ "$2" != PASS && "$2" != "n/a" ]]; then failed=1; fi
}

# Seconds left for a step: min(cap, what remains of the budget minus a reserve for the rest).
time_for() { # cap reserve
  local left=$((budget - (SECONDS - start) - $2))
  if ((left < $1)); then echo "$left"; else echo "$1"; fi
}

# Runs "$@" under timeout, teeing output to a log. Sets step_rc and step_secs.
timed() { # seconds log command...
  local secs=$1 log=$2
  shift 2
  local t0=$SECONDS
  step_rc=0
  if ((secs <= 0)); then
    echo "device_check: no time left in the ${budget} s budget for: $*" | tee "$log"
    step_rc=124
  else
    echo "+ timeout ${secs}s $*"
    set +e
    timeout --kill-after=10 "$secs" "$@" 2>&1 | tee "$log"
    step_rc=${PIPESTATUS[0]}
    set -e
  fi
  step_secs=$((SECONDS - t0))
}

# "total failed skipped" from a ctest log. ctest counts a skipped test as passed in its summary
# line and lists it (and disabled ones) under "The following tests did not run:"; a test whose
# executable is missing ("Not Run") is counted as failed.
ctest_counts() {
  local summary total failed_n
  summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$1" |
    tail -n 1 || true)
  if [[ -z "$summary" ]]; then
    echo "0 0 0"
    return
  fi
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<< "$summary")
  failed_n=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<< "$summary")
  local skipped_n
  skipped_n=$(awk '
    /^The following tests did not run:/ { in_list = 1; next }
    in_list && /^[ \t]+[0-9]+ - / { n++; next }
    { in_list = 0 }
    END { print n + 0 }' "$1")
  echo "$total $failed_n $skipped_n"
}

run_ctest_step() { # name file-stem cap ctest-args...
  local name=$1 stem=$2 cap=$3
  shift 3
  local log="$out_dir/${stem}.log"
  timed "$(time_for "$cap" 30)" "$log" ctest --test-dir "$build_dir" --output-on-failure \
    --no-tests=error -j 4 --timeout 120 --output-junit "$out_dir/${stem}_junit.xml" "$@"
  local total failed_n skipped_n status detail skipped_names
  read -r total failed_n skipped_n < <(ctest_counts "$log")
  detail="$((total - failed_n - skipped_n))/$total passed, $failed_n failed, $skipped_n skipped"
  skipped_names=$(awk '
    /^The following tests did not run:/ { in_list = 1; next }
    in_list && /^[ \t]+[0-9]+ - / { sub(/^[ \t]+[0-9]+ - /, ""); printf "%s ", $0; next }
    { in_list = 0 }' "$log")
  if ((step_rc == 124 || step_rc == 137)); then
    status=TIMEOUT
  elif ((total == 0)); then
    status=FAIL
    detail="no tests ran (ctest exit $step_rc)"
  elif ((step_rc != 0 || failed_n > 0)); then
    status=FAIL
  elif ((skipped_n > 0)); then
    status=SKIPPED
    detail="$detail (nothing may skip on a GPU machine): $skipped_names"
  else
    status=PASS
  fi
  add_row "$name" "$status" "$step_secs" "$detail"
}

print_summary() {
  {
    echo
    echo "device_check summary ($((SECONDS - start)) s of a ${budget} s budget)"
    printf '%-32s %-8s %6s  %s\n' step status secs detail
    printf '%-32s %-8s %6s  %s\n' "--------------------------------" "--------" "------" \
      "------"
    local row name status secs detail
    for row in "${rows[@]}"; do
      IFS='|' read -r name status secs detail <<< "$row"
      printf '%-32s %-8s %6s  %s\n' "$name" "$status" "$secs" "$detail"
    done
    if ((failed)); then echo "device_check: FAILED"; else echo "device_check: OK"; fi
  } | tee "$summary_file"
}

# ---------------------------------------------------------------------------------------------
# 0. The machine.
echo "==== device_check: machine"
if gpus=$(nvidia-smi -L 2>&1); then
  echo "$gpus"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  add_row gpu PASS 0 "$(head -n 1 <<< "$gpus")"
else
  echo "$gpus"
  add_row gpu FAIL 0 "nvidia-smi -L failed: no GPU visible"
  print_summary
  exit 1
fi
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$nvcc_bin" --version 2>&1 | tail -n 2 || true

# 1. Configure a fresh build.
echo "==== device_check: configure ($build_dir)"
rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
generator=()
if command -v ninja > /dev/null 2>&1; then generator=(-G Ninja); fi
timed "$(time_for 90 300)" "$out_dir/configure.log" cmake -S "$root" -B "$build_dir" \
  "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DLOOM_WITH_CUDA=ON \
  -DLOOM_CUDA_ARCHITECTURES=90 -DLOOM_BUILD_TESTS=ON -DLOOM_BUILD_BENCH=ON
if ((step_rc != 0)); then
  add_row configure FAIL "$step_secs" "exit $step_rc (log: configure.log)"
  print_summary
  exit 1
fi
add_row configure PASS "$step_secs" "sm_90, ${generator[*]:-Unix Makefiles}"

# 2. Build everything.
echo "==== device_check: build (-j$jobs)"
timed "$(time_for 330 100)" "$out_dir/build.log" cmake --build "$build_dir" -j "$jobs"
if ((step_rc != 0)); then
  status=FAIL
  if ((step_rc == 124 || step_rc == 137)); then status=TIMEOUT; fi
  add_row build "$status" "$step_secs" "exit $step_rc (log: build.log)"
  grep -E 'error|Error' "$out_dir/build.log" | head -n 20 || true
  print_summary
  exit 1
fi
add_row build PASS "$step_secs" "$(grep -c -iE 'warning' "$out_dir/build.log" || true) warning lines"

# 3. Tests. A multi-rank CUDA test (name ending _np<R>) needs R GPUs (NCCL allows one rank per
# GPU): those with R above this machine's GPU count cannot run here and are listed as n/a.
echo "==== device_check: CUDA tests"
gpu_count=$(grep -c '^GPU ' <<< "$gpus" || true)
too_many=()
while IFS= read -r test_name; do
  if [[ "$test_name" =~ _np([0-9]+)$ ]] && ((BASH_REMATCH[1] > gpu_count)); then
    too_many+=("$test_name")
  fi
done < <(ctest --test-dir "$build_dir" -N -L cuda | sed -nE 's/^ *Test +#[0-9]+: (.*)$/\1/p')
cuda_args=(-L cuda)
if ((${#too_many[@]} > 0)); then
  cuda_args+=(-E "^($(IFS='|' && echo "${too_many[*]}"))\$")
  add_row "cuda tests needing more GPUs" "n/a" 0 "$gpu_count GPU(s): ${too_many[*]}"
fi
run_ctest_step "ctest -L cuda" cuda_tests 120 "${cuda_args[@]}"
echo "==== device_check: communicator tests"
run_ctest_step "ctest -R ^comm_ -LE cuda" comm_tests 90 -R '^comm_' -LE cuda

# 4. Benchmarks that take --device.
echo "==== device_check: benchmarks"
mkdir -p "$out_dir/bench"
benches=()
if [[ -d "$build_dir/bench" ]]; then
  while IFS= read -r -d '' exe; do
    benches+=("$exe")
  done < <(find "$build_dir/bench" -path '*/CMakeFiles' -prune -o -type f -perm -u+x \
    ! -name '*.so' ! -name '*.a' -print0 | sort -z)
fi
if ((${#benches[@]} == 0)); then
  add_row "bench" "n/a" 0 "no programs in $build_dir/bench"
fi
for exe in "${benches[@]}"; do
  name=$(basename "$exe")
  help=$(timeout 10 "$exe" --help 2>&1 || true)
  if ! grep -qE -- '(^|[^[:alnum:]_-])--?device([^[:alnum:]_-]|$)' <<< "$help"; then
    add_row "bench $name" "n/a" 0 "no --device flag"
    continue
  fi
  args=(--device cuda)
  if grep -qE -- '--?json' <<< "$help"; then args+=(--json "$out_dir/bench/$name.json"); fi
  timed "$(time_for 90 5)" "$out_dir/bench/$name.log" "$exe" "${args[@]}"
  if ((step_rc == 0)); then
    add_row "bench $name" PASS "$step_secs" "${args[*]}"
  elif ((step_rc == 124 || step_rc == 137)); then
    add_row "bench $name" TIMEOUT "$step_secs" "${args[*]}"
  else
    add_row "bench $name" FAIL "$step_secs" "exit $step_rc: $(tail -n 1 "$out_dir/bench/$name.log")"
  fi
done

print_summary
exit "$failed"
