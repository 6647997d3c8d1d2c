"""One way to play a policy in the world model, for GRPO's sampled rollouts and the loop's greedy judge alike.

Every start frame is played chunk by chunk: ``act`` picks an action chunk per frame, the world model imagines the next K
frames and their success probabilities; a rollout stops at the first frame whose probability exceeds ``threshold``
(success) or when the world model says it is done, and all stop after ``horizon_chunks`` chunks. A policy with a state
input has its state advanced after every chunk: by the world model's state head when it imagines exactly the
policy's state features (``head``), otherwise by ``reckoner`` (`learning.rl.imagined_state.DeadReckoning`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# act(frames (N, H, W, 3) uint8, states (N, F) or None, alive (indices of the rollouts still playing)) -> (N, K, A)
Act = Callable[[np.ndarray, np.ndarray | None, np.ndarray], np.ndarray]


@dataclass
class Imagined:
    success: np.ndarray        # (N,) bool: a frame crossed the threshold
    reward_max: np.ndarray     # (N,) float32: the highest success probability of any frame played
    chunks_played: np.ndarray  # (N,) int64
    final_frames: np.ndarray   # (N, H, W, 3): the last imagined frame of every rollout


def play(env, act: Act, frames: np.ndarray, instruction: str, horizon_chunks: int, threshold: float, *,
         states: np.ndarray | None = None, head: bool = False, reckoner=None, reset_seed: int | None = None,
         on_chunk: Callable[[np.ndarray, np.ndarray], None] | None = None,
         any_alive: Callable[[np.ndarray], bool] = np.any) -> Imagined:
    """Play ``act`` from ``frames`` in ``env`` (a `WorldModelEnv`). ``on_chunk(alive, imagined (N, K, H, W, 3))``
    sees every chunk's frames; ``any_alive`` decides whether to play on (on several ranks: whether any rank has a
    rollout still playing, so that all play the same number of chunks)."""
    obs = env.reset(frames, instruction, seed=reset_seed, states=states if head else None)
    n = len(frames)
    alive, success = np.ones(n, bool), np.zeros(n, bool)
    reward_max, played = np.zeros(n, np.float32), np.zeros(n, np.int64)
    for _ in range(horizon_chunks):
        idx = np.flatnonzero(alive)
        chunks = np.asarray(act(obs, states, idx), dtype=np.float32)
        next_frames, rewards, done = env.step(chunks)
        if states is not None:
            states = env.state.copy() if head else reckoner.step(states, chunks)
        if on_chunk is not None:
            on_chunk(idx, next_frames)
        played[idx] += 1
        chunk_max = np.asarray(rewards, np.float32).max(axis=1)
        reward_max = np.where(alive, np.maximum(reward_max, chunk_max), reward_max)
        success |= alive & (chunk_max > threshold)
        alive &= ~np.asarray(done, bool) & ~success
        obs = next_frames[:, -1]  # the policy sees the last imagined frame
        if not any_alive(alive):
            break
    return Imagined(success, reward_max, played, obs.copy())
