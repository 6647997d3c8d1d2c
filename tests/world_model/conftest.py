"""Tiny configs of the real classes for the world-model tests (32x32 frames, a 2-layer Cosmos transformer)."""

from __future__ import annotations


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


def tiny_overrides(**extra) -> list[str]:
    """`wvl train-wm` overrides that select the tiny test config (32x32 frames, chunk 4, 2-layer transformer)."""
    cfg = tiny_config()
    out = [f"model.image_size={cfg.image_size}", f"model.chunk={cfg.chunk}", f"model.text_vocab={cfg.text_vocab}",
           f"model.text_len={cfg.text_len}", f"model.action_hidden={cfg.action_hidden}", f"model.reward_hidden={cfg.reward_hidden}"]
    for k, v in TINY_TEST_TRANSFORMER.items():
        v = str(v).replace(" ", "") if isinstance(v, list) else ("false" if v is False else v)
        out.append(f"model.transformer_kwargs.{k}={v}")
    out += ["train.batch_size=4", "train.log_every=1", "train.threads=1", "train.warmup_steps=1"]
    out += [f"{k}={v}" for k, v in extra.items()]
    return out


def make_store(root, n_per_outcome: int = 2, T: int = 10, size: int = 32, seed: int = 0):
    """An episode store of synthetic episodes (success / near_success / failure)."""
    from learning.data.store import EpisodeStore
    from tests.factories import random_episode

    store = EpisodeStore(root)
    for i in range(n_per_outcome):
        for j, o in enumerate(("success", "near_success", "failure")):
            store.append(random_episode(T=T + i, H=size, W=size, seed=seed + 10 * i + j, outcome=o))
    return store
