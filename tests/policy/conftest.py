"""Tiny real policies and stores for the policy tests (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learning.data.store import EpisodeStore
from learning.policy.compact import CompactVLA
from learning.policy.tokenizers import WordTokenizer
from tests.factories import random_episode

INSTRUCTION = "pick up the red cube"
OTHER = "put the red cube on the goal"


def tiny_compact(image_size: int = 16, seed: int = 0, **kw) -> CompactVLA:
    torch.manual_seed(seed)
    args = dict(vocab=WordTokenizer.build([INSTRUCTION, OTHER]).vocab, image_size=image_size, chunk_length=8, action_dim=7,
                d_model=32, n_layers=1, n_heads=2, mlp_ratio=2, conv_channels=[8, 16], keypoints=4, max_instruction_len=12,
                instructions=[INSTRUCTION, OTHER], image_mean=[0.4, 0.4, 0.4], image_std=[0.2, 0.2, 0.2],
                keypoint_level=2, fused_token=False)
    args.update(kw)
    return CompactVLA(**args).eval()


@pytest.fixture
def policy() -> CompactVLA:
    return tiny_compact()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


@pytest.fixture
def tiny_store(tmp_path) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "store")
    for i, outcome in enumerate(["success", "success", "success", "near_success", "success"]):
        store.append(random_episode(T=12, H=16, W=16, seed=i, outcome=outcome))
    return store
