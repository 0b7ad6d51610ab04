#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run): dependencies, configure, build, lint, tests.
#
#   tests/run_all.sh                 ci preset; every test except those labelled `slow`
#   tests/run_all.sh --all           include `slow` tests
#   tests/run_all.sh -L mpi          only tests labelled mpi (ctest -L: a regex on labels;
#                                    several -L must all match), still without `slow`
#   tests/run_all.sh --all -L slow   only the slow tests
#   tests/run_all.sh -LE cuda        also exclude label cuda (ORed with the `slow` exclusion)
#   tests/run_all.sh -- -R proto_    anything after -- goes to ctest as is
#
# Options:
#   --preset NAME   configure/build/test preset (default ci; e.g. asan for the sanitizer run)
#   --jobs N        parallel build and test jobs (default: nproc)
#   --no-deps       do not run tools/setup_deps.sh
#   --dry-run       print the commands instead of running them
#   -h, --help      this text
#
# Steps: tools/setup_deps.sh (installs only what is missing), cmake --preset, cmake --build
# --preset, tools/lint.sh, ctest --preset. A failing lint does not stop the tests; every
# failure makes the exit status 1. The last line is always "N passed, N failed, N skipped"
# (from ctest's summary; skipped = skipped + disabled, e.g. CUDA tests without a GPU).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

preset=ci
jobs=$(nproc 2> /dev/null || echo 2)
all=0
deps=1
dry_run=0
include_labels=()
exclude_labels=()
ctest_extra=()
while (($# > 0)); do
  case "$1" in
    --all) all=1 ;;
    -L)
      [[ $# -ge 2 ]] || { echo "run_all: -L needs a label regex" >&2; exit 2; }
      include_labels+=("$2")
      shift
      ;;
    -LE)
      [[ $# -ge 2 ]] || { echo "run_all: -LE needs a label regex" >&2; exit 2; }
      exclude_labels+=("$2")
      shift
      ;;
    --preset)
      [[ $# -ge 2 ]] || { echo "run_all: --preset needs a name" >&2; exit 2; }
      preset=$2
      shift
      ;;
    --jobs)
      [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || {
        echo "run_all: --jobs needs a positive number" >&2
        exit 2
      }
      jobs=$2
      shift
      ;;
    --no-deps) deps=0 ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      ctest_extra=("$@")
      break
      ;;
    *)
      echo "run_all: unknown argument '$1' (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Runs a command, or prints it under --dry-run.
run() {
  if ((dry_run)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  "$@"
}

stage() { echo "==== run_all: $* ($(date +%H:%M:%S))"; }
final_line() {
  echo "$1 passed, $2 failed, $3 skipped"
}

failures=()

# ---------------------------------------------------------------------------------------------
if ((deps)); then
  stage "dependencies"
  if ! run tools/setup_deps.sh; then
    echo "run_all: FAILED: tools/setup_deps.sh"
    final_line 0 0 0
    exit 1
  fi
fi

stage "configure (preset $preset)"
if ! run cmake --preset "$preset"; then
  echo "run_all: FAILED: configure"
  final_line 0 0 0
  exit 1
fi

stage "build (preset $preset, -j$jobs)"
if ! run cmake --build --preset "$preset" -j "$jobs"; then
  echo "run_all: FAILED: build"
  final_line 0 0 0
  exit 1
fi

stage "lint"
if ! run tools/lint.sh; then
  failures+=("lint")
fi

# ---------------------------------------------------------------------------------------------
stage "test (preset $preset, -j$jobs)"
ctest_args=(--preset "$preset" -j "$jobs")
if ((!all)); then
  exclude_labels=('^slow$' "${exclude_labels[@]}")
fi
if ((${#exclude_labels[@]} > 0)); then
  # ctest uses only one -LE regex: exclude a test when any of the regexes matches a label.
  ctest_args+=(-LE "$(IFS='|' && echo "${exclude_labels[*]}")")
fi
for label in "${include_labels[@]}"; do
  ctest_args+=(-L "$label")
done
ctest_args+=("${ctest_extra[@]}")

passed=0
failed=0
skipped=0
if ((dry_run)); then
  run ctest "${ctest_args[@]}"
else
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  ctest_status=0
  ctest "${ctest_args[@]}" 2>&1 | tee "$log" || ctest_status=$?
  # "95% tests passed, 1 tests failed out of 20": skipped tests are counted as passed there
  # and listed under "The following tests did not run:" as (Skipped); disabled ones are listed
  # there too but are not in the total.
  summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" |
    tail -n 1 || true)
  if [[ -n "$summary" ]]; then
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<< "$summary")
    failed=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<< "$summary")
    read -r skipped_run disabled < <(awk '
      /^The following tests did not run:/ { in_list = 1; next }
      in_list && /^[ \t]+[0-9]+ - / {
        if ($0 ~ /\(Skipped\)[ \t]*$/) s++
        else if ($0 ~ /\(Disabled\)[ \t]*$/) d++
        next
      }
      { in_list = 0 }
      END { print s + 0, d + 0 }' "$log")
    passed=$((total - failed - skipped_run))
    skipped=$((skipped_run + disabled))
    echo "run_all: ctest summary: $summary"
  else
    echo "run_all: no ctest summary found (ctest exit status $ctest_status)"
  fi
  if ((ctest_status != 0)) || [[ -z "$summary" ]]; then
    failures+=("tests")
  fi
fi

# ---------------------------------------------------------------------------------------------
if ((${#failures[@]} > 0)); then
  echo "run_all: FAILED: ${failures[*]}"
  final_line "$passed" "$failed" "$skipped"
  exit 1
fi
if ((dry_run)); then
  echo "run_all: dry run: nothing was run"
else
  echo "run_all: OK"
fi
final_line "$passed" "$failed" "$skipped"
