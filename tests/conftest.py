"Shared fixtures: the real data beside the checkout, and small files the tests write."
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
