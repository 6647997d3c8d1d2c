"""Tiny configs of the real classes for the world-model tests (32x32 frames, a 2-layer Cosmos transformer)."""

from __future__ import annotations

import pytest
import torch

from learning.world_model.config import WorldModelConfig

TINY_TEST_TRANSFORMER = {
    "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2, "mlp_ratio": 2.0, "text_embed_dim": 16,
    "adaln_lora_dim": 16, "patch_size": [1, 2, 2], "rope_scale": [1.0, 1.0, 1.0], "concat_padding_mask": False,
    "extra_pos_embed_type": "learnable",
}


def tiny_config(**over) -> WorldModelConfig:
    base = dict(image_size=32, chunk=4, n_cond=1, patch_factor=4, patch_frames=2, transformer_kwargs=dict(TINY_TEST_TRANSFORMER),
                text_vocab=64, text_len=8, action_hidden=32, reward_hidden=32)
    base.update(over)
    return WorldModelConfig(**base)


@pytest.fixture(autouse=True)
def _one_thread():
    # The build machine's 2 cores are shared by every test process: one thread avoids OpenMP barrier stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
