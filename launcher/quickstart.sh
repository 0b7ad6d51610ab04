#!/usr/bin/env bash
# Quickstart: from a fresh checkout to a working multi-rank run on this machine.
#
#   launcher/quickstart.sh [--np N] [--jobs N] [--no-deps] [--dry-run]
#
# Steps, in order (each is a step_<name> function below):
#   deps       tools/setup_deps.sh: install the Debian packages that are missing (none: no-op)
#   build      cmake --preset release, then build the programs the later steps run
#   selfcheck  mpirun -np N build/release/tools/loom_selfcheck: every collective on N ranks of
#              this host, checked against values each rank computes itself
#   data       loom data synthetic: 200,000 rows of the quickstart click model
#              (configs/data/synthetic_quickstart.pbtxt) into build/quickstart/data, with the
#              generator's oracle (Bayes-optimal) AUC of the test split
#   train      loom train on N CPU ranks: configs/quickstart.pbtxt, one epoch (about 1.5 min
#              on 2 ranks of a 2-core machine), run directory build/quickstart/run
#   compare    prints the final test AUC next to the oracle AUC; fails if it is more than
#              0.02 below
#
# Options:
#   --np N      ranks for the multi-rank steps (default 2; --oversubscribe lets N exceed cores)
#   --jobs N    parallel build jobs (default: nproc)
#   --no-deps   skip the deps step
#   --dry-run   print the commands instead of running them
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# The steps run, in order.
kSteps=(deps build selfcheck data train compare)
# What the build step builds (only these: a quickstart need not build every test).
kTargets=(loom_selfcheck loom_data_cli loom_train loom_ckpt)
readonly kPreset=release
readonly kDataConfig=configs/data/synthetic_quickstart.pbtxt
readonly kTrainConfig=configs/quickstart.pbtxt
readonly kDataDir=build/quickstart/data
readonly kRunDir=build/quickstart/run
readonly kRows=200000
readonly kMaxGap=0.02

np=2
jobs=$(nproc 2> /dev/null || echo 2)
deps=1
dry_run=0
while (($# > 0)); do
  case "$1" in
    --np | --jobs)
      [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || {
        echo "quickstart: $1 needs a positive number" >&2
        exit 2
      }
      if [[ "$1" == --np ]]; then np=$2; else jobs=$2; fi
      shift
      ;;
    --no-deps) deps=0 ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "quickstart: unknown argument '$1' (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
readonly build_dir="build/$kPreset"

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if ((dry_run)); then return 0; fi
  "$@"
}

# mpirun for `np` ranks on this host: --oversubscribe (more ranks than cores is fine for a
# check), --allow-run-as-root when root (Open MPI refuses root otherwise), logs on stderr.
# OpenMP threads per rank: the cores shared out among the ranks (at least 1), so N ranks do
# not start N x cores threads.
mpirun_ranks() {
  local flags=(-np "$np" --oversubscribe)
  if ((EUID == 0)); then flags+=(--allow-run-as-root); fi
  local cores threads
  cores=$(nproc 2> /dev/null || echo 1)
  threads=$((cores / np))
  ((threads >= 1)) || threads=1
  run env GLOG_logtostderr=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" mpirun "${flags[@]}" "$@"
}

step_deps() {
  if ((!deps)); then
    echo "(skipped: --no-deps)"
    return 0
  fi
  run tools/setup_deps.sh
}

step_build() {
  run cmake --preset "$kPreset"
  if ! run cmake --build --preset "$kPreset" -j "$jobs" --target "${kTargets[@]}"; then
    echo "quickstart: building ${kTargets[*]} failed (is every target defined in" \
      "tools/CMakeLists.txt?)" >&2
    return 1
  fi
}

step_selfcheck() {
  local exe="$build_dir/tools/loom_selfcheck"
  if ((!dry_run)) && [[ ! -x "$exe" ]]; then
    echo "quickstart: $exe was not built" >&2
    return 1
  fi
  mpirun_ranks "$exe"
}

step_data() {
  # Reuse the data of an earlier quickstart made from the same generator config and rows.
  if ((!dry_run)) && [[ -f "$kDataDir/synthetic.json" ]] &&
    cmp -s "$kDataConfig" "$kDataDir/quickstart_source.pbtxt" &&
    grep -q "\"rows\": $kRows," "$kDataDir/synthetic.json"; then
    echo "(reusing $kDataDir: generated from the same $kDataConfig)"
    return 0
  fi
  run rm -rf "$kDataDir"
  run "$build_dir/tools/loom_data" synthetic --config "$kDataConfig" --rows "$kRows" \
    --out "$kDataDir"
  run cp "$kDataConfig" "$kDataDir/quickstart_source.pbtxt"
}

step_train() {
  # A fresh run: the quickstart's own run directory is replaced.
  run rm -rf "$kRunDir"
  local t0=$SECONDS
  mpirun_ranks "$build_dir/tools/loom_train" --config "$kTrainConfig" --no-resume \
    --set "train { run_dir: \"$kRunDir\" }"
  echo "quickstart: training took $((SECONDS - t0)) s on $np ranks"
}

step_compare() {
  if ((dry_run)); then
    echo "+ compare the last AUC of $kRunDir/metrics.jsonl with oracle_auc of $kDataDir/synthetic.json"
    return 0
  fi
  local oracle auc
  oracle=$(sed -n 's/.*"oracle_auc": *\([0-9.eE+-]*\).*/\1/p' "$kDataDir/synthetic.json")
  auc=$(tail -n 1 "$kRunDir/metrics.jsonl" | sed -n 's/.*"auc": *\([0-9.eE+-]*\).*/\1/p')
  if [[ -z "$oracle" || -z "$auc" ]]; then
    echo "quickstart: cannot read the AUCs (oracle '$oracle', final '$auc')" >&2
    return 1
  fi
  awk -v auc="$auc" -v oracle="$oracle" -v gap="$kMaxGap" 'BEGIN {
    printf "quickstart: final test AUC %.4f, oracle (Bayes-optimal) AUC %.4f, gap %.4f (allowed %.2f)\n",
           auc, oracle, oracle - auc, gap
    exit (oracle - auc <= gap) ? 0 : 1 }'
}

start=$SECONDS
for step in "${kSteps[@]}"; do
  echo "==== quickstart: $step"
  if ! "step_$step"; then
    echo "quickstart: step '$step' FAILED" >&2
    exit 1
  fi
done
echo "==== quickstart: done in $((SECONDS - start)) s (${kSteps[*]})"
