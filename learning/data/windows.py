"""Training windows from the episode store: ``(frames ..t, action chunk t..t+K-1, frames t+1..t+K, rewards)``.

A window starting at step t holds
- ``cond``    (n_cond, H, W, 3) uint8: frames t-n_cond+1 .. t (repeated frame 0 before the episode starts),
- ``actions`` (K, 7) float32: the actions commanded at t .. t+K-1,
- ``frames``  (K, H, W, 3) uint8: the frames observed after them, t+1 .. t+K,
- ``rewards`` (K,) float32: per-frame success of frames t+1 .. t+K,
- ``state_cond`` (S,), ``states`` (K, S) float32 (with ``WindowSpec.state_features``): the robot state
  (`robot.state` features) at frame t and at frames t+1 .. t+K, held at the last one past the episode's end;
- ``mask``    (K,) bool: False where the episode ended before t+k and the window was padded by holding still
  (last frame repeated, hold action, last reward) -- the physically right continuation of a finished episode;
- ``prev_cond`` (n_cond, H, W, 3), ``prev_actions`` (K, 7), ``has_prev``: the window K steps earlier (its cond
  frames and actions; ``has_prev`` False when it would start before the episode), from which a world model can
  generate this window's cond frame itself (`learning.world_model.train` ``train.own_frames``).

Frames are decoded once and kept in memory as uint8 (100 episodes of 30 64x64 frames = 37 MB), so a batch
is an index gather; for stores larger than memory, pass ``indices`` to load a subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learning.data.store import EpisodeStore
from robot.state import check_state_features

OUTCOME_IDS = {"success": 0, "near_success": 1, "failure": 2, "unlabeled": 3}


def held_actions(actions: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The (T, 7) episode's actions at ``steps``; from its last recorded step on, hold still (zero motion, the last
    gripper command): the physically right continuation of a finished episode, for training windows and replays alike."""
    last = len(actions) - 1
    out = actions[np.minimum(steps, last)].copy()
    out[steps >= last, :6] = 0.0  # the last recorded action is already a hold; beyond it, hold still
    return out


class WindowError(ValueError):
    """A window cannot be built (too-short episode, mismatched image sizes); the message names the episode."""


@dataclass(frozen=True)
class WindowSpec:
    chunk: int = 8  # K: actions per window = frames predicted
    n_cond: int = 1  # conditioning frames
    stride: int = 1  # step between window starts
    camera: str | None = None  # None: the first camera of each episode
    pad_end: bool = True  # allow windows that run past the episode end (padded by holding still)
    # The per-step column the chunks come from: "action" (what the arm executed) or an extras column such as
    # "extras.expert_action" (a noisy expert's noise-free labels, `robot.sim.expert.ExpertSource`).
    action_column: str = "action"
    state_features: tuple[str, ...] = ()  # robot.state features of the per-frame state targets; () = none
    # Extra windows at each episode's last frame whose chunk is all hold (the arm stays where the episode ended),
    # this many copies per episode ("done: hold still"; a demonstration ends 2 steps after success). Tried against
    # the policy losing success in the settle steps, it did not help (bench/results/sft_recipes.md row 27). Needs pad_end.
    end_hold_windows: int = 0

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.n_cond < 1 or self.stride < 1 or self.end_hold_windows < 0:
            raise ValueError(f"window spec: chunk, n_cond and stride must be >= 1, end_hold_windows >= 0, got {self}")
        if self.end_hold_windows and not self.pad_end:
            raise ValueError("window spec: end_hold_windows needs pad_end (its chunk lies past the episode's end)")
        object.__setattr__(self, "state_features", check_state_features(self.state_features, "window spec: state_features"))


class WindowDataset:
    def __init__(self, store: EpisodeStore, spec: WindowSpec = WindowSpec(), indices: list[int] | None = None) -> None:
        self.spec = spec
        self.episode_indices = list(range(len(store))) if indices is None else list(indices)
        if not self.episode_indices:
            raise WindowError(f"no episodes selected from {store.root}")
        K = spec.chunk
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.states: list[np.ndarray] = []  # (T, S) per episode, with spec.state_features
        self.outcomes: list[str] = []
        self.tasks: list[str] = []
        starts = []
        image_shape = None
        for j, ei in enumerate(self.episode_indices):
            row = store.row(ei)
            frames = store.frames(ei, spec.camera)
            if image_shape is None:
                image_shape = frames.shape[1:]
            elif frames.shape[1:] != image_shape:
                raise WindowError(f"episode {ei}: image size {frames.shape[1:3]} differs from {image_shape[:2]} of the other episodes; resize or select one rig")
            if spec.action_column not in store.step_columns(ei):
                raise WindowError(f"episode {ei}: no column {spec.action_column!r} (it has the executed 'action'; "
                                  f"noise-free expert labels exist only in episodes collected with action_noise > 0)")
            t = store.step_table(ei, [spec.action_column])
            actions = np.asarray(t.column(spec.action_column).to_pylist(), np.float32)
            rewards = store.success(ei)  # per-observation success flags: the reward head's target at each next frame
            if spec.state_features:
                self.states.append(store.states(ei, spec.state_features))
            T = len(frames)
            if T < 2:
                raise WindowError(f"episode {ei}: {T} frame(s); a window needs at least 2")
            if not spec.pad_end and T < K + 1:
                raise WindowError(f"episode {ei}: {T} frames is shorter than one window (chunk {K} + 1); lower chunk or set pad_end")
            last_start = T - 2 if spec.pad_end else T - 1 - K
            starts.extend((j, s) for s in range(0, last_start + 1, spec.stride))
            starts.extend((j, T - 1) for _ in range(spec.end_hold_windows))  # at the last frame: every action holds
            self.frames.append(frames)
            self.actions.append(actions)
            self.rewards.append(rewards)
            self.outcomes.append(row["outcome"])
            self.tasks.append(row["tasks"][0])
        self.image_shape = image_shape
        self._starts = np.array(starts, dtype=np.int64)  # (N, 2): local episode, start step
        self.window_outcomes = np.array([OUTCOME_IDS[self.outcomes[j]] for j, _ in starts], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        j, t = self._starts[i]
        K, C = self.spec.chunk, self.spec.n_cond
        frames, actions, rewards = self.frames[j], self.actions[j], self.rewards[j]
        T = len(frames)
        cond_idx = np.clip(np.arange(t - C + 1, t + 1), 0, T - 1)
        nxt = np.arange(t + 1, t + K + 1)
        mask = nxt < T
        nxt_c = np.minimum(nxt, T - 1)
        acts = held_actions(actions, np.arange(t, t + K))
        prev = t - K  # the window before this one: what an autoregressive rollout generated this window's cond from
        prev_cond_idx = np.clip(np.arange(prev - C + 1, prev + 1), 0, T - 1)
        prev_acts = actions[np.clip(np.arange(prev, t), 0, T - 1)]
        item = {
            "cond": frames[cond_idx],
            "prev_cond": frames[prev_cond_idx],
            "prev_actions": prev_acts,
            "has_prev": np.bool_(prev >= 0),
            "actions": acts,
            "frames": frames[nxt_c],
            "rewards": rewards[nxt_c],
            "mask": mask,
            "outcome": np.int64(OUTCOME_IDS[self.outcomes[j]]),
            "episode": np.int64(self.episode_indices[j]),
            "t": np.int64(t),
        }
        if self.spec.state_features:
            item["state_cond"], item["states"] = self.states[j][t], self.states[j][nxt_c]
        return item

    def batch(self, idx: np.ndarray | list[int]) -> dict[str, np.ndarray]:
        items = [self[int(i)] for i in idx]
        return {k: np.stack([it[k] for it in items]) for k in items[0]}
