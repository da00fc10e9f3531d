#!/usr/bin/env bash
# Build a wheelhouse for a GPU node with no network whose image already has CUDA torch and
# the other packages under [image] in tools/wheelhouse.txt, but none of the project's other
# runtime dependencies (docs/training.md, "Installing on a GPU node with no network").
#
#   tools/make-wheelhouse.sh [--dry-run] [OUT]      # or: make wheelhouse (OUT = .whl)
#
#   OUT             where the wheels go (argument, else $OUT, else .whl); wheels of the
#                   listed packages already there are replaced, nothing else is touched
#   PYTHON_VERSION  the node's Python (default 3.12); wheels are for CPython of that
#                   version on manylinux x86-64, not for the machine this runs on
#   VENV_PY         the Python whose installed versions are pinned (default: the
#                   project's .venv); a package it lacks is taken at its newest, with a warning
#   --dry-run       print the pip commands, download nothing
#
# The packages: tools/wheelhouse.txt, [wheel] (binary wheels downloaded for the target)
# and [build] (source-only on PyPI, built here as pure-Python wheels with DS_BUILD_OPS=0).
# Needs the package registry. On the node:
#   python3 -m pip install --no-index --no-deps --target /tmp/site OUT/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LIST=${WHEELHOUSE_LIST:-$HERE/wheelhouse.txt}
DRY=0
if [ "${1:-}" = "--dry-run" ] || [ "${1:-}" = "-n" ]; then DRY=1; shift; fi
OUT=${1:-${OUT:-.whl}}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
VENV_PY=${VENV_PY:-$ROOT/.venv/bin/python}
if [ -x "$VENV_PY" ]; then PIP_PY=$VENV_PY; else PIP_PY=python3; fi

say() { echo "make-wheelhouse: $*" >&2; }
run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }

# The names under [$1] in the list (first word of each line, comments dropped).
section() {
  awk -v want="[$1]" '
    { sub(/#.*/, "") }
    /^[[:space:]]*\[/ { sec = $1; next }
    sec == want && NF { print $1 }' "$LIST"
}

# NAME==VERSION for each name, the version from $VENV_PY's environment.
pins() {
  if [ ! -x "$VENV_PY" ]; then
    say "no venv at $VENV_PY: taking the newest version of $*"
    printf '%s\n' "$@"
    return
  fi
  "$VENV_PY" - "$@" <<'PY'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
        print(f"make-wheelhouse: {name} is not in the venv: taking its newest version", file=sys.stderr)
PY
}

mapfile -t WHEEL < <(section wheel)
mapfile -t BUILD < <(section build)
[ "${#WHEEL[@]}" -gt 0 ] && [ "${#BUILD[@]}" -gt 0 ] || { say "no [wheel] or [build] packages in $LIST"; exit 1; }
mapfile -t WHEEL_PINS < <(pins "${WHEEL[@]}")
mapfile -t BUILD_PINS < <(pins "${BUILD[@]}")

# pip matches manylinux_2_N exactly: name the usual ones, newest first.
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done

run mkdir -p "$OUT"
# A wheel of an earlier version beside the new one would stop the install on the node.
shopt -s nullglob nocaseglob
for name in "${WHEEL[@]}" "${BUILD[@]}"; do
  stem=$(echo "$name" | tr -- '-.' '__')
  for old in "$OUT/$stem"-*.whl; do run rm -f "$old"; done
done
shopt -u nocaseglob

run "$PIP_PY" -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYTHON_VERSION" --implementation cp "${PLATFORMS[@]}" \
  -d "$OUT" "${WHEEL_PINS[@]}"
# Pure Python, so built by this machine's Python for any CPython 3; DeepSpeed without its ops.
run env DS_BUILD_OPS=0 "$PIP_PY" -m pip wheel -q --no-deps -w "$OUT" "${BUILD_PINS[@]}"

[ "$DRY" = 1 ] && exit 0
# Check: one wheel per package, the built ones pure Python.
status=0
for name in "${WHEEL[@]}" "${BUILD[@]}"; do
  stem=$(echo "$name" | tr -- '-.' '__')
  shopt -s nocaseglob; found=("$OUT/$stem"-*.whl); shopt -u nocaseglob
  if [ "${#found[@]}" -ne 1 ]; then say "$name: ${#found[@]} wheels in $OUT (want 1)"; status=1; fi
done
for name in "${BUILD[@]}"; do
  stem=$(echo "$name" | tr -- '-.' '__')
  shopt -s nocaseglob; found=("$OUT/$stem"-*.whl); shopt -u nocaseglob
  for w in "${found[@]}"; do
    case "$w" in *-none-any.whl) ;; *) say "$w is not pure Python: it would not load on the node"; status=1 ;; esac
  done
done
ls -1 "$OUT"
wheels=("$OUT"/*.whl)
size=$(du -cb "${wheels[@]}" | tail -1 | awk '{ printf "%.0f MiB", $1 / 1048576 }')
echo "make-wheelhouse: ${#wheels[@]} wheels, $size in $OUT (CPython $PYTHON_VERSION, manylinux x86-64)"
exit $status
