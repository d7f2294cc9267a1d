#!/bin/bash
# Build the Ascend 310 inference program into ascend310_infer/build.
#
#   bash build.sh                    full build (preprocess, preprocess_tool, main); needs
#                                    MINDSPORE_PATH = MindSpore install with include/api/model.h
#                                    and lib/libmindspore.so
#   bash build.sh --preprocess-only  OpenCV part only (preprocess + preprocess_tool), no MindSpore
#   bash build.sh --help
set -euo pipefail

usage() {
  cat <<USAGE
usage: bash build.sh [--preprocess-only] [--clean] [-h|--help]
  (no option)        full build: preprocess library, preprocess_tool and the 'main' inference
                     program; requires MINDSPORE_PATH (MindSpore install containing
                     include/api/model.h and lib/libmindspore.so)
  --preprocess-only  build only the OpenCV part (preprocess library + preprocess_tool)
  --clean            remove ascend310_infer/build before building
  -h, --help         show this help
Output: ascend310_infer/build/{main,preprocess_tool}
USAGE
}

preprocess_only=0
clean=0
for arg in "$@"; do
  case "$arg" in
    --preprocess-only) preprocess_only=1 ;;
    --clean) clean=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="$here/build"

for tool in cmake c++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' not found; install cmake and a C++17 compiler (e.g. apt-get install cmake g++)" >&2
    exit 1
  fi
done

cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [ "$preprocess_only" -eq 1 ]; then
  cmake_args+=(-DPREPROCESS_ONLY=ON)
else
  if [ -z "${MINDSPORE_PATH:-}" ]; then
    cat >&2 <<MSG
error: MINDSPORE_PATH is not set. The full build needs the MindSpore C++ inference API:
  export MINDSPORE_PATH=/path/to/mindspore   # must contain include/api/model.h and lib/libmindspore.so
  (MindSpore Ascend packages that ship the C++ API keep it inside the package directory:
   export MINDSPORE_PATH=\$(python3 -c "import mindspore, os; print(os.path.dirname(mindspore.__file__))")
   then check that include/api/model.h and lib/libmindspore.so are there)
or build only the OpenCV part:  bash build.sh --preprocess-only
MSG
    exit 1
  fi
  if [ ! -f "$MINDSPORE_PATH/include/api/model.h" ] || [ ! -f "$MINDSPORE_PATH/lib/libmindspore.so" ]; then
    echo "error: MINDSPORE_PATH=$MINDSPORE_PATH has no include/api/model.h and/or lib/libmindspore.so" >&2
    echo "       (a MindSpore install for Ascend with the C++ inference API is required)" >&2
    exit 1
  fi
  cmake_args+=(-DPREPROCESS_ONLY=OFF "-DMINDSPORE_PATH=$MINDSPORE_PATH")
fi

if [ "$clean" -eq 1 ]; then
  rm -rf "$build_dir"
fi

jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S "$here" -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" -j "$jobs"

if [ "$preprocess_only" -eq 0 ] && [ ! -x "$build_dir/main" ]; then
  echo "error: the 'main' target was not built; see the CMake messages above" >&2
  exit 1
fi
echo "built in $build_dir:"
ls -1 "$build_dir" | grep -E '^(main|preprocess_tool)$' | sed 's/^/  /'
