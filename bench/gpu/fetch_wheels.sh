#!/usr/bin/env bash
# Download the wheels the GPU check installs on a machine that has no network, and cut the
# onnxruntime-gpu wheel (about 244 MiB) into pieces small enough for one transfer each.
#
#   bash bench/gpu/fetch_wheels.sh [DEST]        # DEST defaults to .whl at the repository root
#
# The list and its versions come from .venv (python -m bench.gpu.wheels: what the service and
# its tests import, and what those need), so the device runs what the tests ran here.
# Environment:
#   PY_VERSION=3.12     the device's Python (wheels are chosen for it, not for this machine)
#   PIECE=60m           size of each onnxruntime-gpu piece (split -b)
#   VENV_PYTHON=.venv/bin/python
#
# Result, all under DEST (git-ignored: .git/info/exclude holds /.whl/):
#   small/*.whl                        every wheel except onnxruntime-gpu
#   ort/<wheel>.part-aa, -ab, ...      the onnxruntime-gpu wheel in pieces (cat joins them)
#   ort/MANIFEST                       "<sha256> <wheel> <pieces>", checked after reassembly
# and it prints the device calls that carry them (bench/gpu/README.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:-$ROOT/.whl}
PY_VERSION=${PY_VERSION:-3.12}
PIECE=${PIECE:-60m}
VENV_PYTHON=${VENV_PYTHON:-$ROOT/.venv/bin/python}

download() {
  python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d "$1" "${@:2}"
}

split_ort() {
  local wheel name sha count
  wheel=$(find "$DEST/small" -maxdepth 1 -name 'onnxruntime_gpu-*.whl')
  name=$(basename "$wheel")
  rm -rf "$DEST/ort" && mkdir -p "$DEST/ort"
  sha=$(sha256sum "$wheel" | cut -d' ' -f1)
  split -b "$PIECE" "$wheel" "$DEST/ort/$name.part-"
  count=$(find "$DEST/ort" -maxdepth 1 -name "$name.part-*" | wc -l)
  echo "$sha $name $count" >"$DEST/ort/MANIFEST"
  rm "$wheel"
}

plan() {
  local rel pieces last piece
  rel=${DEST#"$ROOT"/}
  mapfile -t pieces < <(cd "$ROOT" && printf '%s\n' "$rel"/ort/*.part-*)
  last=${pieces[-1]}
  echo
  echo "small wheels: $(du -sh "$DEST/small" | cut -f1) in $rel/small;" \
    "onnxruntime-gpu: ${#pieces[@]} pieces in $rel/ort"
  echo "device calls, back to back (the machine is given back after 30 s idle):"
  for piece in "${pieces[@]:0:${#pieces[@]}-1}"; do
    echo "  carry [\"$piece\", \"$rel/ort/MANIFEST\"]"
    echo "    command: bash bench/gpu/run.sh --stage"
  done
  echo "  carry [\"$rel/small\", \"$last\", \"$rel/ort/MANIFEST\"]"
  echo "    command: bash bench/gpu/run.sh"
}

main() {
  if [[ ! -x "$VENV_PYTHON" ]]; then
    echo "no $VENV_PYTHON: run 'make venv' first (the versions are read from it)" >&2
    exit 1
  fi
  local reqs
  mapfile -t reqs < <(cd "$ROOT" && "$VENV_PYTHON" -m bench.gpu.wheels)
  if [[ ${#reqs[@]} -eq 0 ]]; then
    echo "python -m bench.gpu.wheels listed nothing" >&2
    exit 1
  fi
  echo "wheels for Python $PY_VERSION: ${reqs[*]}"
  mkdir -p "$DEST/small"
  find "$DEST/small" -maxdepth 1 -name '*.whl' -delete
  download "$DEST/small" "${reqs[@]}"
  split_ort
  plan
}

main
