"""A policy as an action source: the adapter between the episode runner and a chunk policy.

The runner asks an `ActionSource` for chunks; a deployed policy (`robot.policy_runtime`, ONNX) only needs
to answer one question, `ChunkPolicy.act(image_hwc_uint8, arm_state) -> (K, 7) float32`. `PolicySource` picks
the policy's camera out of the observation, resizes the frame to what the policy was trained on (when it
differs), hands over the arm's state read in the same step (the policy takes what its manifest lists of it)
and checks the chunk's shape. It does *not* clip or repair actions: out-of-range or non-finite
outputs are the safety filter's job, and it counts them.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from robot.arms.base import ArmState
from robot.runner import Observation

log = logging.getLogger(__name__)


class ChunkPolicy(Protocol):
    def act(self, image_hwc_uint8: np.ndarray, state: ArmState | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB + the arm's state -> (K, 7) float32 action chunk."""


class PolicySource:
    """``camera``: which frame the policy sees; ``image_size`` (H, W): resize to it (None: as is)."""

    def __init__(self, policy: ChunkPolicy, camera: str = "front", image_size: tuple[int, int] | None = None,
                 action_dim: int = 7) -> None:
        self.policy, self.camera, self.image_size, self.action_dim = policy, camera, image_size, action_dim
        self.instruction = ""
        self.calls = 0

    def reset(self, instruction: str) -> None:
        self.instruction = instruction
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def next_chunk(self, obs: Observation) -> np.ndarray:
        if self.camera not in obs.frames:
            raise KeyError(f"policy camera {self.camera!r} is not among the rig's cameras {sorted(obs.frames)}")
        img = obs.frames[self.camera].rgb
        if self.image_size is not None and tuple(img.shape[:2]) != tuple(self.image_size):
            import cv2

            h, w = self.image_size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        chunk = np.asarray(self.policy.act(np.ascontiguousarray(img, dtype=np.uint8), obs.state), dtype=np.float32)
        if chunk.ndim == 3 and chunk.shape[0] == 1:  # (1, K, 7): a batch of one
            chunk = chunk[0]
        if chunk.ndim != 2 or chunk.shape[1] != self.action_dim or chunk.shape[0] < 1:
            raise ValueError(f"policy output: expected a (K, {self.action_dim}) chunk, got shape {chunk.shape}")
        self.calls += 1
        return chunk
