#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Loom needs to build and test, and only those missing.
#
#   tools/setup_deps.sh               install what is missing (as root, or through sudo)
#   tools/setup_deps.sh --with-slurm  also slurm-wlm and munge (the launcher's Slurm tests)
#   tools/setup_deps.sh --check       only report what is missing; exit 1 if anything is
#
# Idempotent: when everything is installed it does nothing at all (no apt-get update) and
# returns in well under a second. What each package is for: docs/building.md.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

packages=(
  cmake g++ make                      # build
  libopenmpi-dev openmpi-bin          # MPI: CPU collectives, launcher, NCCL bootstrap
  libprotobuf-dev protobuf-compiler   # config and checkpoint schemas
  libgoogle-glog-dev libgflags-dev    # logging; command-line flags
  libopenblas-dev                     # CPU GEMM
  libgtest-dev                        # tests
  python3-torch python3-numpy         # PyTorch reference model (tests/reference)
  clang-format                        # tools/lint.sh (Debian 12: clang-format 14)
)
check_only=0
for arg in "$@"; do
  case "$arg" in
    --with-slurm) packages+=(slurm-wlm munge) ;;
    --check) check_only=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "setup_deps: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

if ! command -v dpkg-query > /dev/null 2>&1; then
  echo "setup_deps: dpkg-query not found: this script supports Debian/Ubuntu only;" \
    "install the equivalents of: ${packages[*]}" >&2
  exit 1
fi

missing=()
for package in "${packages[@]}"; do
  # shellcheck disable=SC2016  # ${Status} is dpkg-query's format field
  status=$(dpkg-query -W -f='${Status}' "$package" 2> /dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup_deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup_deps: missing: ${missing[*]}"
if ((check_only)); then
  exit 1
fi

if ((EUID == 0)); then
  as_root=()
elif command -v sudo > /dev/null 2>&1 && sudo -n true 2> /dev/null; then
  as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
  echo "setup_deps: need root to install (run as root, or with passwordless sudo):" \
    "apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "setup_deps: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup_deps: installed: ${missing[*]}"
