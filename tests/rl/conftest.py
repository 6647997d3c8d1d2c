import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On the shared 2-core build machines two torch threads spin-wait against each other (as tests/policy/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
