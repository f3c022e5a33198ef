#!/usr/bin/env bash
# Every test of mcal: notebooks and module in sync, README in sync, notebook tests, pytest suites.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== nbdev-export leaves mcal/ unchanged"
before=$(git status --porcelain -- mcal nbs 2>/dev/null || true)
nbdev-export
after=$(git status --porcelain -- mcal nbs 2>/dev/null || true)
if [ "$before" != "$after" ]; then echo "nbdev-export changed mcal/: export the notebooks and commit"; git status --porcelain -- mcal; exit 1; fi
python .ci/readme.py --check
python -c "import quantus" 2>/dev/null || pip install -q --no-deps "quantus==0.6.0"   # see pyproject.toml's dev extra: why --no-deps
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's chromium for the browser test (tests/test_browser.py)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "could not install chromium: the browser test will skip and say so"
fi
skip=()
if command -v chromium >/dev/null 2>&1 && python -c "import playwright" 2>/dev/null; then
  skip=(--skip-file-glob 16_walkthrough.ipynb)     # the walkthrough trains once: tests/test_browser.py runs it in JupyterLab and fails on any traceback
  echo "(nbs/16_walkthrough.ipynb runs once, in JupyterLab, in tests/test_browser.py)"
fi
echo "== nbdev-test"
# two notebooks at a time, each with half the cores for PyTorch's threads (pools that outnumber the cores stall)
half=$(python -c "import os; print(max(1, (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1) // 2))")
time OMP_NUM_THREADS=${OMP_NUM_THREADS:-$half} \
  nbdev-test --n-workers 2 --cell-timeout 3600 "${skip[@]}"   # a cell limit is only a hang guard: a slow machine never fails a correct run
echo "== pytest"
python -m pytest tests -p no:cacheprovider -q --durations=15 -n auto --dist loadfile   # one process per core (pytest-xdist), a test file each at a time
