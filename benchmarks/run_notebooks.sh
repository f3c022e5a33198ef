#!/usr/bin/env bash
# Regenerate every notebook's committed outputs: run all notebooks, the `slow` real-data cells included
# (the walkthrough's section 8 via MCAL_REAL_DATA=1), save the outputs into the notebooks on success,
# then strip metadata (nbdev-clean keeps outputs). Needs ../shared/data (or $MCAL_DATA); about 10 min on 2 cores.
# Images in the outputs come only from data_samples/, screening640 or CBIS-DDSM, never mini-MIAS pixels.
set -euo pipefail
cd "$(dirname "$0")/.."
export MCAL_REAL_DATA=1
time nbdev-test --flags slow --n-workers 1 --cell-timeout 3600 --save "$@"
nbdev-clean
python .ci/tidy_outputs.py      # console progress bars in saved outputs collapse to what a terminal shows
python .ci/readme.py
