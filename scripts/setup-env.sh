#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install only what is missing.
# Sourced by scripts/book.sh and scripts/test.sh; prints the venv's python on stdout.
#
#   TCMP_VENV         where the environment lives (default: .venv in the repository)
#   TCMP_PYTHON       interpreter used to create it (default: python3, must be >= 3.10)
#   TCMP_TORCH_SPEC   torch requirement installed when torch is missing (default: torch==2.13.0,
#                     a CPU build; give e.g. "torch --index-url ..." for a CUDA build)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${TCMP_VENV:-$repo/.venv}
base_python=${TCMP_PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$base_python" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' 2>/dev/null || {
    echo "setup-env: $base_python must be Python >= 3.10 (set TCMP_PYTHON)" >&2; exit 1; }
  echo "setup-env: creating $venv" >&2
  "$base_python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
py="$venv/bin/python"

# torch first and pinned: an unpinned install (or one pulled in as a dependency) would fetch
# several GB of CUDA packages; any torch the user already installed is kept.
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "setup-env: installing ${TCMP_TORCH_SPEC:-torch==2.13.0}" >&2
  # shellcheck disable=SC2086  # the spec may hold several words (an index URL)
  "$py" -m pip install -q ${TCMP_TORCH_SPEC:-torch==2.13.0} >&2
fi

# The project and its extras, reinstalled only when pyproject.toml changed.
stamp="$venv/.tcmp-setup-stamp"
want=$(sha256sum "$repo/pyproject.toml" | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup-env: installing tcmplib (editable) with the book and test extras" >&2
  "$py" -m pip install -q -e "$repo[book,test]" >&2
  echo "$want" > "$stamp"
fi
echo "$py"
