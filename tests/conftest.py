"""Fixtures every test shares."""

import sys

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The 2-core build machines are shared by every test process: two torch threads spin-wait against each other
    (10x slower, measured) and OpenMP barriers stall. Only where torch is already imported: the robot-side tests
    never import it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
