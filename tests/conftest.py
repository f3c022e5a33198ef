"Shared fixtures: the real data beside the checkout, and small files the tests write; a subprocess runner with a hang guard."
import os, subprocess
# Before numpy and torch load: under pytest-xdist (`-n`) each worker, and what it starts, gets its share of the cores,
# since thread pools that outnumber the cores stall each other.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)   # Linux: the cores this process may use
if WORKERS > 1: os.environ.setdefault('OMP_NUM_THREADS', str(max(1, CORES // WORKERS)))
from pathlib import Path
import numpy as np
import pytest
from mcal.datasets import shared_data_dir


@pytest.fixture(scope='session')
def data_dir():
    d = shared_data_dir()
    if d is None: pytest.skip('../shared/data not present (real-data tests need it; set MCAL_DATA)')
    return d


@pytest.fixture
def pixels():
    return (np.random.default_rng(0).random((120, 100)) * 3000 + 500).astype(np.uint16)


HANG_GUARD_S = 1800   # only a hang guard: a slow or busy machine never fails a correct run; a run past it has hung


def run_guarded(cmd, **kwargs) -> subprocess.CompletedProcess:
    "`subprocess.run(cmd)` with captured text output; a run that has not ended after `HANG_GUARD_S` fails the test as a hang."
    try: return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, **kwargs)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f'hung: {" ".join(map(str, cmd))} had not ended after {HANG_GUARD_S} s\n{(e.stdout or b"")[-2000:]!r}')
