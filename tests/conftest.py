import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/ helpers: tolerances, models

torch.set_num_threads(int(os.environ.get("DAAM_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _poison_op_outputs():
    """Every output a fused op allocates (daam_fast/ops/_alloc.py) starts as NaN (uint8: 0xA5),
    so an element a kernel forgets to write fails the test instead of passing as stale memory."""
    from daam_fast.ops import _alloc
    with _alloc.poisoned():
        yield
