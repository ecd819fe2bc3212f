#!/usr/bin/env sh
# Install a lock file from requirements/ into a virtual environment, hashes checked, no
# resolution: `scripts/install_locked.sh .venv requirements/dev.txt`.
#
# torch is pinned to its CPU build (2.13.0+cpu), which lives on PyTorch's own index, so it is
# installed first with that index added (TORCH_INDEX_URL; a wheel already in pip's cache or
# find-links is used as is). Everything else comes from the default index.
set -eu
VENV="$1"
LOCK="$2"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
PIP="$VENV/bin/pip"
TORCH_LOCK="$VENV/.torch-lock.txt"

[ -x "$PIP" ] || python3 -m venv "$VENV"
# torch's entry and its hash lines, as pip-compile wrote them.
awk '/^torch==/{keep=1} keep&&/^ *#/{keep=0} keep' "$LOCK" > "$TORCH_LOCK"
if [ -s "$TORCH_LOCK" ]; then
    "$PIP" install -q --require-hashes --no-deps --extra-index-url "$TORCH_INDEX_URL" -r "$TORCH_LOCK"
fi
"$PIP" install -q --require-hashes --no-deps -r "$LOCK"
"$PIP" install -q --no-deps --no-build-isolation -e .
"$PIP" check
