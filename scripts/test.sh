#!/usr/bin/env bash
# The test suite: unit tests, every chapter under nbval (smoke profile), the stored
# regression notebooks under strict nbval, then the strict book build.
# Real-data tests run when FPHA_ROOT is set and skip with a reason otherwise.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
py=$(bash scripts/setup-env.sh)
# Training reuses freed memory instead of faulting it in anew at every step (same numbers,
# less CPU time): the malloc settings of tcmplib.sweep.KERNEL_ENV, for every kernel started here.
# shellcheck disable=SC2046
export $("$py" -c 'from tcmplib.sweep import KERNEL_ENV as e; print(*(f"{k}={v}" for k, v in e.items()))')

bash scripts/book.sh

"$py" -m pytest tests --ignore=tests/notebooks "$@"
TCMP_PROFILE=smoke "$py" -m pytest chapters --nbval-lax \
  --nbval-sanitize-with nbval_sanitize.cfg -p no:cacheprovider
if compgen -G "tests/notebooks/*.ipynb" >/dev/null; then
  "$py" -m pytest tests/notebooks --nbval --nbval-sanitize-with nbval_sanitize.cfg -p no:cacheprovider
fi
