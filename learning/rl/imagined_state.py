"""The robot state a policy with a state input sees in imagination, dead-reckoned from its own commands.

A world model whose state head predicts exactly the policy's state features gives the policy its state in
imagination (`learning.world_model.env.WorldModelEnv.state`). Otherwise (a model without a state head, or other
features) GRPO and the loop's imagined evaluation give a state-input policy a state integrated from the actions it
played, starting at the state recorded with the start frame:

- TCP position: ``+= a[:3] * translation_m_per_unit`` per action, each step clipped to ``max_translation_m`` as
  the safety filter clips it. The gain is the arm's, fitted on recorded episodes (`tracking_gain`), not the
  command's nominal scale (the simulated rig's delta-pose action: 1.0 = 0.1 m per step, robot/conf/robot.yaml): the
  simulated Panda covers about 60% of each commanded step at 10 Hz, and integrating the nominal scale put the
  imagined TCP 85-90 mm from the real one on average (bench/results/wm_state_head.md);
- gripper opening: 1 (open) after an opening command, ``closed_opening`` after a closing one (the opening the
  demonstrations show with the object in the hand: a dead-reckoner cannot know whether the grasp caught it);
- orientation features stay at their start value (the SANS experts never rotate the hand).

This is an approximation and is labelled as one: the policy in imagination is not the policy on the robot in
every detail, and an imagined success is checked on the robot before it counts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from robot.state import check_state_features

POSITION = {"ee_x": 0, "ee_y": 1, "ee_z": 2}


def start_states(store, indices: Sequence[int], features: Sequence[str], frames: Sequence[int] | None = None) -> np.ndarray:
    """(E, S) float32: the robot state recorded with each start frame (``frames[e]`` of episode ``indices[e]``;
    default: the first frame)."""
    features = check_state_features(features)
    frames = [0] * len(indices) if frames is None else list(frames)
    rows, tables = [], {}
    for i, f in zip(indices, frames):
        if int(i) not in tables:  # an episode's table read once, however many of its frames start imagination
            tables[int(i)] = store.states(int(i), features)
        rows.append(tables[int(i)][int(f)])
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(features)), np.float32)


def keyframes(store, indices: Sequence[int], stride: int) -> list[tuple[int, int]]:
    """(episode, frame) start points for keyframe-initialised imagination (WoVR): every ``stride``-th frame of each
    episode that still has ``stride`` frames after it (at least the first frame). Imagination drifts with its horizon; starting from real
    intermediate frames keeps the part of a rollout that decides success (grasp, place) within a chunk or two of
    a real frame."""
    if stride < 1:
        raise ValueError(f"keyframe stride: must be >= 1, got {stride}")
    return [(int(i), f) for i in indices for f in range(0, max(1, int(store.row(int(i))["length"]) - stride), stride)]


def tracking_gain(store, indices: Sequence[int], default: float = 0.1) -> float:
    """Metres the TCP moves per unit of translation command per step, the least-squares fit of the recorded
    displacements to the executed commands over ``indices``: sum <dp, a> / sum <a, a>. ``default`` when the
    episodes hold no translation command."""
    num = den = 0.0
    for i in indices:
        pos = store.states(int(i), ("ee_x", "ee_y", "ee_z"))
        a = np.clip(np.asarray(store.step_table(int(i), ["action"]).column("action").to_pylist(), np.float32)[:len(pos) - 1, :3], -1, 1)
        num += float(np.sum(np.diff(pos, axis=0)[:len(a)] * a))
        den += float(np.sum(a * a))
    return num / den if den > 0 else default


def closed_opening(store, indices: Sequence[int], hold_steps: int = 3) -> float:
    """The median gripper opening ``hold_steps`` or more steps after a closing command, over ``indices``
    (about 0.5 for a 4 cm cube in the Panda's 8 cm hand); 0.0 when no episode closes the gripper."""
    vals = []
    for i in indices:
        t = store.step_table(int(i), ["observation.gripper", "action"])
        g = np.asarray(t.column("observation.gripper").to_pylist(), np.float32)
        a = np.asarray(t.column("action").to_pylist(), np.float32)
        closes = np.flatnonzero(a[:, 6] < 0)
        if closes.size and closes[0] + hold_steps < len(g):
            held = np.arange(closes[0] + hold_steps, len(g))
            vals.extend(g[held][a[held - 1, 6] < 0].tolist())
    return float(np.median(vals)) if vals else 0.0


class DeadReckoning:
    """``step(states (N, S), chunks (N, K, 7)) -> states`` after the chunk; see the module docstring.
    ``DeadReckoning.fitted(features, store, indices)``: the gain and the closed opening fitted on those episodes."""

    @classmethod
    def fitted(cls, features: Sequence[str], store, indices: Sequence[int]) -> "DeadReckoning":
        return cls(features, closed_opening(store, indices), translation_m_per_unit=tracking_gain(store, indices))

    def __init__(self, features: Sequence[str], closed_opening: float = 0.0, translation_m_per_unit: float = 0.1,
                 max_translation_m: float = 0.1) -> None:
        self.features = check_state_features(features)
        self.pos = [(j, POSITION[f]) for j, f in enumerate(self.features) if f in POSITION]
        self.grip = [j for j, f in enumerate(self.features) if f == "gripper"]
        self.closed_opening = float(closed_opening)
        self.scale = float(translation_m_per_unit)
        self.max_translation_m = float(max_translation_m)

    def step(self, states: np.ndarray, chunks: np.ndarray) -> np.ndarray:
        s = np.array(states, dtype=np.float32, copy=True)
        chunks = np.asarray(chunks, np.float32)
        if s.ndim != 2 or s.shape[1] != len(self.features) or chunks.ndim != 3 or len(chunks) != len(s):
            raise ValueError(f"dead reckoning: states {s.shape} / chunks {chunks.shape} do not match "
                             f"(N, {len(self.features)}) / (N, K, 7)")
        for k in range(chunks.shape[1]):
            d = np.clip(chunks[:, k, :3], -1, 1) * self.scale  # (N, 3) m
            norm = np.linalg.norm(d, axis=1, keepdims=True)
            d *= np.minimum(1.0, self.max_translation_m / np.maximum(norm, 1e-12))
            for j, axis in self.pos:
                s[:, j] += d[:, axis]
            for j in self.grip:
                s[:, j] = np.where(chunks[:, k, 6] > 0, 1.0, self.closed_opening)
        return s
