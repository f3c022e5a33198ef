#!/usr/bin/env bash
# The notebooks' slow, real-data cells (flagged `#| slow`): the walkthrough on mini-MIAS + screening640,
# the off-breast check of all mini-MIAS films, and the rest. Needs ../shared/data (or $MCAL_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
time nbdev-test --flags slow --n-workers 1 "$@"
