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

# The steps run, in order. To add training: write step_train (run loom_train on
# configs/quickstart.pbtxt through mpirun_ranks), append `train` here and `loom_train` to
# kTargets.
kSteps=(deps build selfcheck)
# What the build step builds (only these: a quickstart need not build every test).
kTargets=(loom_selfcheck)
readonly kPreset=release

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
mpirun_ranks() {
  local flags=(-np "$np" --oversubscribe)
  if ((EUID == 0)); then flags+=(--allow-run-as-root); fi
  run env GLOG_logtostderr=1 mpirun "${flags[@]}" "$@"
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

start=$SECONDS
for step in "${kSteps[@]}"; do
  echo "==== quickstart: $step"
  if ! "step_$step"; then
    echo "quickstart: step '$step' FAILED" >&2
    exit 1
  fi
done
echo "==== quickstart: done in $((SECONDS - start)) s (${kSteps[*]})"
