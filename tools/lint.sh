#!/usr/bin/env bash
# Repository lint, run by CI (tests/run_all.sh) and before every commit:
#
#   tools/lint.sh          check; exit 1 on any problem
#   tools/lint.sh --fix    reformat C++/CUDA files in place and chmod +x scripts, then check
#
# Checks, over the files a commit would take (tracked files plus untracked files that git
# does not ignore; build trees excluded):
#   format    C++/CUDA sources (.h .cc .cu .cuh ...) are clang-format-14 clean (.clang-format).
#   scripts   shell scripts parse (bash -n, or sh -n for #!/bin/sh); files with a #! line are
#             executable.
#   size      no file is larger than 2 MiB (data and binaries do not belong in the repository).
#   data      no MovieLens data: no file named like the MovieLens releases' files, no file
#             containing a line of the MovieLens 100K files in ../shared/data (when present),
#             no file over 50 lines in a MovieLens ratings/movies layout. Test fixtures are
#             hand-written or generated, never derived (../shared/data/README.md).
#
# Environment: CLANG_FORMAT (binary to use; must be version 14), LOOM_DATA_DIR (default:
# <repo>/../shared/data).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

fix=0
for arg in "$@"; do
  case "$arg" in
    --fix) fix=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "lint: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

root=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
cd "$root"

readonly kMaxBytes=$((2 * 1024 * 1024))
problems=0
fail() {
  echo "lint: $*"
  problems=$((problems + 1))
}

# ---------------------------------------------------------------------------------------------
# The file set.
files=()
while IFS= read -r -d '' f; do
  [[ -f "$f" && ! -L "$f" ]] || continue # deleted in the work tree, or a symlink
  files+=("$f")
done < <(git ls-files -z --cached --others --exclude-standard \
  -x '/build/' -x '/build-*/' -x '/cmake-build-*/' -x '/.cache/')

cxx=()
for f in "${files[@]}"; do
  case "$f" in
    build/* | build-*/* | cmake-build-*/*) ;; # a build tree, even if tracked by mistake
    *.h | *.hh | *.hpp | *.c | *.cc | *.cpp | *.cxx | *.cu | *.cuh) cxx+=("$f") ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# format
find_clang_format() {
  local candidate
  for candidate in "${CLANG_FORMAT:-}" clang-format-14 clang-format; do
    [[ -n "$candidate" ]] || continue
    command -v "$candidate" > /dev/null 2>&1 || continue
    if "$candidate" --version 2> /dev/null | grep -q 'version 14\.'; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! clang_format=$(find_clang_format); then
  fail "format: clang-format 14 not found (tools/setup_deps.sh installs it; or set CLANG_FORMAT)"
elif ((${#cxx[@]} > 0)); then
  if ((fix)); then
    printf '%s\0' "${cxx[@]}" | xargs -0 -n 50 "$clang_format" -i --style=file
  fi
  unformatted=()
  for f in "${cxx[@]}"; do
    if ! "$clang_format" --dry-run --Werror --style=file "$f" > /dev/null 2>&1; then
      unformatted+=("$f")
    fi
  done
  if ((${#unformatted[@]} > 0)); then
    fail "format: ${#unformatted[@]} of ${#cxx[@]} C++/CUDA files are not clang-format clean" \
      "(run tools/lint.sh --fix):"
    printf '  %s\n' "${unformatted[@]:0:40}"
    if ((${#unformatted[@]} > 40)); then echo "  ... and $((${#unformatted[@]} - 40)) more"; fi
    # Show where, for the first file, so a CI log is enough to understand the failure.
    "$clang_format" --dry-run --style=file "${unformatted[0]}" 2>&1 | head -n 12 || true
  else
    echo "lint: format: ${#cxx[@]} C++/CUDA files clean"
  fi
else
  echo "lint: format: no C++/CUDA files"
fi

# ---------------------------------------------------------------------------------------------
# scripts
scripts=0
for f in "${files[@]}"; do
  first=""
  IFS= read -r first < "$f" 2> /dev/null || true
  shebang=0
  [[ "$first" == '#!'* ]] && shebang=1
  shell=""
  if [[ "$f" == *.sh ]]; then
    shell="bash"
  fi
  if ((shebang)); then
    case "$first" in
      *bash*) shell="bash" ;;
      '#!/bin/sh'* | '#!/usr/bin/env sh'* | '#!/bin/dash'*) shell="sh" ;;
    esac
    if [[ ! -x "$f" ]]; then
      if ((fix)); then
        chmod +x "$f"
        echo "lint: scripts: chmod +x $f"
      else
        fail "scripts: $f has a #! line but is not executable (chmod +x, or tools/lint.sh --fix)"
      fi
    fi
  fi
  if [[ -n "$shell" ]]; then
    scripts=$((scripts + 1))
    if ! err=$("$shell" -n "$f" 2>&1); then
      fail "scripts: $f does not parse ($shell -n):"
      echo "$err" | head -n 5 | sed 's/^/  /'
    fi
  fi
done
echo "lint: scripts: $scripts shell scripts checked"

# ---------------------------------------------------------------------------------------------
# size
while IFS=$'\t' read -r -d '' bytes f; do
  if ((bytes > kMaxBytes)); then
    fail "size: $f is $((bytes / 1024)) KiB; files over 2 MiB do not belong in the repository"
  fi
done < <(((${#files[@]} > 0)) && stat --printf '%s\t%n\0' -- "${files[@]}")
echo "lint: size: ${#files[@]} files checked (limit 2 MiB)"

# ---------------------------------------------------------------------------------------------
# data (MovieLens)
data_problems_before=$problems
for f in "${files[@]}"; do
  base=${f##*/}
  case "$base" in
    u.data | u.item | u.user | u.info | u.genre | u.occupation | u[1-5].base | u[1-5].test | \
      ua.base | ua.test | ub.base | ub.test | ratings.dat | movies.dat | users.dat | tags.dat | \
      ml-*.zip)
      fail "data: $f is named like a MovieLens file; MovieLens data must not be committed"
      continue
      ;;
  esac
  case "/$f/" in
    */ml-100k/* | */ml-1m/* | */ml-10m/* | */ml-10M100K/* | */ml-20m/* | */ml-25m/* | \
      */ml-32m/* | */ml-latest/* | */ml-latest-small/* | */movielens-100k/*)
      fail "data: $f is inside a MovieLens release folder; MovieLens data must not be committed"
      ;;
  esac
done

# Lines copied from the real files (the ones the tests read in place).
data_dir=${LOOM_DATA_DIR:-$root/../shared/data}
ml100k="$data_dir/movielens-100k"
small_files=()
while IFS=$'\t' read -r -d '' bytes f; do
  if ((bytes > 0 && bytes <= kMaxBytes)); then small_files+=("$f"); fi
done < <(((${#files[@]} > 0)) && stat --printf '%s\t%n\0' -- "${files[@]}")
if [[ -r "$ml100k/u.data" && ${#small_files[@]} -gt 0 ]]; then
  patterns=$(mktemp)
  trap 'rm -f "$patterns"' EXIT
  for part in u.data u.user u.item; do
    if [[ -r "$ml100k/$part" ]]; then
      LC_ALL=C grep -v '^[[:space:]]*$' "$ml100k/$part" >> "$patterns"
    fi
  done
  copied=$(printf '%s\0' "${small_files[@]}" |
    LC_ALL=C xargs -0 grep -F -x -l -f "$patterns" -- 2> /dev/null || true)
  if [[ -n "$copied" ]]; then
    while IFS= read -r f; do
      fail "data: $f contains lines of MovieLens 100K ($ml100k); do not commit derived data"
    done <<< "$copied"
  fi
  content_note="compared with $ml100k"
else
  content_note="$ml100k not found: content compared by layout only"
fi

# Other MovieLens releases, by layout: a ratings/movies file of more than 50 lines.
if ((${#small_files[@]} > 0)); then
  # shellcheck disable=SC2016  # an awk program, not a shell expansion
  candidates=$(printf '%s\0' "${small_files[@]}" | LC_ALL=C xargs -0 awk '
    FNR == 1 &&
      ($0 ~ /^[0-9]+::[0-9]+::[0-5](\.[05])?::[0-9]+\r?$/ ||
       $0 ~ /^[0-9]+\t[0-9]+\t[1-5]\t[0-9]+\r?$/ ||
       $0 ~ /^"?userId"?,"?movieId"?,"?rating"?,"?timestamp"?\r?$/ ||
       $0 ~ /^"?movieId"?,"?title"?,"?genres"?\r?$/ ||
       $0 ~ /^[0-9]+::[^:]+ \([0-9]+\)::[A-Za-z|'"'"'-]+\r?$/) { print FILENAME }' || true)
  if [[ -n "$candidates" ]]; then
    while IFS= read -r f; do
      lines=$(wc -l < "$f")
      if ((lines > 50)); then
        fail "data: $f ($lines lines) is laid out like MovieLens ratings/movies data;" \
          "fixtures must be hand-written and at most 50 lines"
      fi
    done <<< "$candidates"
  fi
fi
if ((problems == data_problems_before)); then
  echo "lint: data: no MovieLens data ($content_note)"
fi

# ---------------------------------------------------------------------------------------------
if ((problems > 0)); then
  echo "lint: $problems problem(s)"
  exit 1
fi
echo "lint: all checks passed"
