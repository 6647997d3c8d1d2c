"""`WorldModelEnv`: the world model as a batched RL environment (imagination).

    env = WorldModelEnv(load_world_model("runs/wm/v0"), num_inference_steps=2, reward_threshold=0.9, horizon=40)
    obs = env.reset(first_frames, "pick up the red cube", seed=0)     # (B, H, W, 3) uint8
    frames, rewards, done = env.step(action_chunks)                    # (B, K, 7) float32 in [-1, 1]
    # frames (B, K, H, W, 3) uint8, rewards (B, K) float32 in [0, 1], done (B,) bool

    env.reset(first_frames, "pick up the red cube", states=start_states)  # (B, S): the robot state at the first frames
    frames, rewards, done = env.step(action_chunks)
    env.states  # (B, K, S) float32: the robot state the state head imagines at each generated frame
    env.state   # (B, S): ... at the last one (what a state-input policy takes next)

The state (``model.wm_config.state_features``, `robot.state` names) is the state given at reset plus the state
head's predicted change since the conditioning frame, per chunk; without states at reset (or without a state
head) ``env.states`` / ``env.state`` are None.

Each ``step`` samples the next K frames of every rollout with a few Euler steps of the flow (2 by default;
quality vs steps is measured by bench/world_model.py), reads the per-frame success probability from the reward
head (at the last Euler step by default, or in an extra pass at t = 0: ``reward_from``), and makes the last generated frame(s) the conditioning of the next call (autoregressive).
``done`` = any reward of the chunk above ``reward_threshold`` (0.9, as in the paper) or ``horizon`` frames
generated since reset; it is sticky (a done rollout stays done; it is still stepped, its results are for the
caller to ignore).

Reproducibility: rollout i draws its noise from its own generator seeded with ``seed + i`` (or ``seed[i]``), so
a rollout's result does not depend on which other rollouts share its batch (up to float rounding of batched
matrix products).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from learning.world_model.model import WorldModel, load_world_model

log = logging.getLogger(__name__)

RewardFn = Callable[[np.ndarray], np.ndarray]  # frames (B, K, H, W, 3) uint8 -> success probabilities (B, K)


class WorldModelEnv:
    def __init__(self, model: WorldModel | str | Path, num_inference_steps: int = 2, reward_threshold: float = 0.9,
                 horizon: int = 40, device: str | torch.device = "cpu", seed: int = 0, shift: float = 1.0,
                 reward_fn: RewardFn | None = None, reward_from: str = "last_step") -> None:
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: must be >= 1, got {num_inference_steps}")
        if not 0.0 < reward_threshold < 1.0:
            raise ValueError(f"reward_threshold: must be in (0, 1), got {reward_threshold}")
        if horizon < 1:
            raise ValueError(f"horizon: must be >= 1 frame, got {horizon}")
        self.device = torch.device(device)
        self.model = (load_world_model(model) if isinstance(model, (str, Path)) else model).to(self.device).eval()
        cfg = self.model.wm_config
        if self.model.reward_net is None and reward_fn is None:
            raise ValueError("reward_fn: this world model has no reward head (ablation); pass a frame-based reward_fn, "
                             "e.g. learning.eval.success_classifier.SuccessClassifier.reward_fn()")
        self.reward_fn = reward_fn
        self.num_inference_steps, self.reward_threshold, self.horizon = num_inference_steps, reward_threshold, horizon
        if reward_from not in ("last_step", "clean"):
            raise ValueError(f"reward_from: {reward_from!r} is not 'last_step' or 'clean'")
        self.shift, self.seed, self.reward_from = shift, seed, reward_from
        self.chunk, self.image_size, self.action_dim = cfg.chunk, cfg.image_size, cfg.action_dim
        self._cond: torch.Tensor | None = None  # (B, n_cond, H, W, 3) uint8: the frames the next step conditions on
        self._text: torch.Tensor | None = None
        self._gens: list[torch.Generator] = []
        self.t = np.zeros(0, np.int64)  # frames generated since reset, per rollout
        self.done = np.zeros(0, bool)
        self.state_features: tuple[str, ...] = tuple(cfg.state_features)
        self.state: np.ndarray | None = None  # (B, S) the imagined robot state at the last frame
        self.states: np.ndarray | None = None  # (B, K, S) ... at each frame of the last chunk

    @property
    def batch_size(self) -> int:
        return len(self._gens)

    def reset(self, frames: np.ndarray, instruction: str | Sequence[str], seed: int | Sequence[int] | None = None,
              states: np.ndarray | None = None) -> np.ndarray:
        """Start B rollouts from real first frames (B, H, W, 3) uint8 [and the robot states recorded with them (B, S),
        in ``state_features`` order]; returns the frames as the first observation."""
        frames = np.asarray(frames)
        S = self.image_size
        if frames.ndim != 4 or frames.shape[1:] != (S, S, 3) or frames.dtype != np.uint8:
            raise ValueError(f"reset frames: expected (B, {S}, {S}, 3) uint8 (the world model's image size), got {frames.shape} {frames.dtype}")
        B = len(frames)
        if states is not None:
            if self.model.state_net is None:
                raise ValueError("reset states: this world model has no state head (model.state_features is empty); "
                                 "advance the robot state outside it (learning.rl.imagined_state.DeadReckoning)")
            states = np.asarray(states, np.float32)
            if states.shape != (B, len(self.state_features)):
                raise ValueError(f"reset states: expected ({B}, {len(self.state_features)}) float32 for the world model's state "
                                 f"features {list(self.state_features)}, got {states.shape}")
        self.state, self.states = (None, None) if states is None else (states.copy(), None)
        instructions = [instruction] * B if isinstance(instruction, str) else list(instruction)
        if len(instructions) != B:
            raise ValueError(f"instruction: {len(instructions)} instructions for {B} frames; give one, or one per rollout")
        seeds = [self.seed + i for i in range(B)] if seed is None else ([seed + i for i in range(B)] if isinstance(seed, int) else list(seed))
        if len(seeds) != B:
            raise ValueError(f"seed: {len(seeds)} seeds for {B} rollouts")
        n_cond = self.model.wm_config.n_cond
        self._cond = torch.from_numpy(frames).unsqueeze(1).repeat(1, n_cond, 1, 1, 1)  # (B, n_cond, H, W, 3): before t=0, hold still
        self._text = self.model.tokenize(instructions)
        self._gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.t = np.zeros(B, np.int64)
        self.done = np.zeros(B, bool)
        return frames.copy()

    @torch.no_grad()
    def step(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance every rollout by one action chunk (B, K, 7) (clipped to [-1, 1]); see the module docstring."""
        if self._cond is None:
            raise RuntimeError("step() before reset(): call reset(frames, instruction) first")
        chunks = np.asarray(chunks, dtype=np.float32)
        B, K, A = self.batch_size, self.chunk, self.action_dim
        if chunks.ndim != 3 or chunks.shape[0] != B or chunks.shape[2] != A:
            raise ValueError(f"chunks: expected ({B}, {K}, {A}) action chunks (batch from reset), got {chunks.shape}")
        if chunks.shape[1] != K:
            raise ValueError(f"chunks: {chunks.shape[1]} actions per chunk, the world model predicts {K} frames per call; "
                             f"pad the chunk (e.g. hold still) or use a model trained with chunk={chunks.shape[1]}")
        model = self.model
        cond_lat, _ = model.encode_window(self._cond)
        shape = model.noise_shape(1)[1:]
        noise = torch.stack([torch.randn(shape, generator=g) for g in self._gens]).to(self.device)  # (B, C, Tp, h, w)
        actions = torch.from_numpy(np.clip(chunks, -1.0, 1.0)).to(self.device)
        latents, probs, delta = model.generate(cond_lat, actions, self._text.to(self.device), noise, self.num_inference_steps, self.shift,
                                               self.reward_from)
        frames_t = model.decode_next(cond_lat, latents).cpu()  # (B, K, H, W, 3) uint8
        frames = frames_t.numpy()
        if probs is not None:
            rewards = probs.float().cpu().numpy().astype(np.float32)
        else:
            rewards = np.asarray(self.reward_fn(frames), dtype=np.float32)
        if self.state is not None:  # the change is relative to the conditioning frame, whose state is self.state
            self.states = self.state[:, None] + delta.cpu().numpy().astype(np.float32)
            self.state = self.states[:, -1].copy()
        n_cond = model.wm_config.n_cond
        self._cond = torch.cat([self._cond, frames_t], 1)[:, -n_cond:]
        self.t = self.t + K
        self.done = self.done | (rewards > self.reward_threshold).any(1) | (self.t >= self.horizon)
        return frames, rewards, self.done.copy()
