"""The state-aware world model: action-conditioned Cosmos DiT + reward head + robot-state head, training, imagination env.

Interfaces for the loop / GRPO (shapes in each docstring):
    train_world_model(cfg, stores, init_from=None) -> Path        learning/world_model/train.py
    load_world_model(path, expect=None) -> WorldModel              learning/world_model/model.py
    WorldModelEnv(model, num_inference_steps=2, reward_threshold=0.9, horizon=40, device="cpu", seed=0)
        .reset(frames (B,H,W,3) uint8, instruction, states=(B,S) float32 or None) -> (B,H,W,3)
        .step(chunks (B,K,7) float32) -> frames (B,K,H,W,3) uint8, rewards (B,K) float32, done (B,) bool
        .states (B,K,S) / .state (B,S): the imagined robot state (with states at reset and a state head)
    evaluate_world_model(model_or_ckpt, store, episode_indices, ...) -> dict   learning/eval/world_model.py
"""

from learning.world_model.config import TrainConfig, WorldModelConfig
from learning.world_model.env import WorldModelEnv
from learning.world_model.model import CheckpointMismatchError, WorldModel, load_world_model
from learning.world_model.train import train_world_model

__all__ = ["CheckpointMismatchError", "TrainConfig", "WorldModel", "WorldModelConfig", "WorldModelEnv", "load_world_model", "train_world_model"]
