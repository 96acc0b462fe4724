#!/usr/bin/env bash
# Build the book (strict: any warning or failing cell fails the build).
# Output: _build/html/index.html. Environment: see scripts/setup-env.sh; TCMP_PROFILE,
# TCMP_DATASET and FPHA_ROOT are read by the chapters.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
py=$(bash scripts/setup-env.sh)
# Training reuses freed memory instead of faulting it in anew at every step (same numbers,
# less CPU time): the malloc settings of tcmplib.sweep.KERNEL_ENV, for every kernel started here.
# shellcheck disable=SC2046
export $("$py" -c 'from tcmplib.sweep import KERNEL_ENV as e; print(*(f"{k}={v}" for k, v in e.items()))')
bin=$(dirname "$py")

# jupyter-cache keys executed notebooks on their cell sources only. Any change to the library,
# the packaged paper numbers, committed results or the run settings must re-execute them.
inputs=$({
  find tcmplib results pyproject.toml environment.yml -type f ! -path '*/__pycache__/*' \
    -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum
  echo "profile=${TCMP_PROFILE:-} dataset=${TCMP_DATASET:-} fpha=${FPHA_ROOT:-}"
} | sha256sum | cut -c1-16)
stamp=_build/.tcmp-inputs
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$inputs" ]; then
  rm -rf _build/.jupyter_cache
fi

mkdir -p _build
if ! "$bin/jupyter-book" build --all -W -n --keep-going .; then
  echo "book: build failed; execution reports:" >&2
  cat _build/html/reports/*.err.log 2>/dev/null >&2 || true
  exit 1
fi
# The book must read offline: MathJax shipped with it, no page loading it from a CDN.
if [ ! -f _build/html/_static/mathjax/MathJax.js ] || grep -rlq 'cdn.jsdelivr.net' _build/html --include='*.html'; then
  echo "book: MathJax is not served from _build/html/_static/mathjax (see _ext/offline_mathjax.py)" >&2
  exit 1
fi
echo "$inputs" > "$stamp"
echo "book: open $repo/_build/html/index.html"
