"""Scripted experts with privileged object poses, and the near-success perturbations (SANS in simulation).

An expert is a list of Cartesian waypoints computed at reset from the true object poses, followed by a
proportional controller. A near-success episode runs the *same* expert aiming at a slightly wrong target:

- ``place_offset``: grasp correctly, place 3.5-6 cm off the goal. Measured on PickCube (research/maniskill.md):
  fails 98%, the cube is carried and ends ~4.7 cm from the goal: the task is almost completed.
- ``grasp_offset``: grasp 3-5 cm off the cube's centre: fails 96-98%, usually a clean miss.

Those ranges are the defaults (`NEAR_SUCCESS_OFFSETS`); a collection can move them (``wvl collect
near_success_offsets=...``) and can also place its successes off the goal by less than the task's tolerance
(``success_place_offset``), so that its successes and near-successes meet at the tolerance's edge.

The outcome of every episode is read from the simulator's own success flag, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERTURBATIONS = ("none", "place_offset", "grasp_offset")


@dataclass(frozen=True)
class Waypoint:
    target: np.ndarray  # (3,) TCP position, m, world frame
    gripper: float  # -1 close, +1 open
    tolerance: float = 0.01  # m: reached when closer than this
    max_steps: int = 15  # give up on this waypoint after this many steps
    min_steps: int = 0  # stay at least this many steps (closing the gripper takes time)
    speed: float = 1.0  # cap on the normalised translation command (a pushed cube slides on if pushed fast)


@dataclass
class Perturbation:
    kind: str = "none"
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def describe(self) -> dict:
        return {"perturbation": self.kind, "perturbation_offset_m": [round(float(x), 4) for x in self.offset]}


# The horizontal miss (m, min and max) of each near-success kind, drawn uniformly in a random direction: a size that
# makes the expert almost, but not quite, succeed (PickCube's goal tolerance is 2.5 cm).
NEAR_SUCCESS_OFFSETS: dict[str, tuple[float, float]] = {"place_offset": (0.035, 0.06), "grasp_offset": (0.03, 0.05)}


def check_offsets(offsets: dict[str, Any], key: str = "near_success_offsets") -> dict[str, tuple[float, float]]:
    """``{kind: [min, max]}`` (m) validated: known kinds, 0 <= min <= max; a kind given as None keeps its default."""
    out = {}
    for kind, r in offsets.items():
        if r is None:
            continue
        if kind not in PERTURBATIONS[1:]:
            raise ValueError(f"{key}: {kind!r} is not a perturbation kind; valid: {PERTURBATIONS[1:]}")
        if len(r) != 2:
            raise ValueError(f"{key}.{kind}: give [min, max] in m, got {list(r)}")
        lo, hi = (float(x) for x in r)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"{key}.{kind}: need 0 <= min <= max (m), got [{lo}, {hi}]")
        out[kind] = (lo, hi)
    return out


def sample_perturbation(kind: str, rng: np.random.Generator, radius_m: float | None = None,
                        offsets: dict[str, tuple[float, float]] | None = None) -> Perturbation:
    """A horizontal offset of a magnitude drawn from ``offsets[kind]`` (default `NEAR_SUCCESS_OFFSETS`), or of
    ``radius_m``, in a random direction (the action-faithfulness table sweeps it)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"perturbation: {kind!r} is not one of {PERTURBATIONS}")
    if kind == "none":
        return Perturbation()
    lo, hi = {**NEAR_SUCCESS_OFFSETS, **(offsets or {})}[kind]
    angle = rng.uniform(0, 2 * np.pi)
    r = rng.uniform(lo, hi) if radius_m is None else float(radius_m)
    return Perturbation(kind, np.array([r * np.cos(angle), r * np.sin(angle), 0.0]))


DEFAULT_GAIN = 0.6  # normalised translation command per (metre of error / max_translation_m)

# Bump when the expert's actions change: cached SANS stores (`wvl loop`) are keyed by it.
# 2: gain 2.5 -> 0.6 (the P-controller overshot the delta-pose target every step).
# 3: episodes run through the one rollout path (robot/sim/rollout.py: runner + safety filter, success at the end).
EXPERT_VERSION = 3


class ScriptedExpert:
    """Waypoint follower. `plan(privileged)` at reset, then `act(privileged)` every control step."""

    def __init__(self, task: str, perturbation: Perturbation | None = None, gain: float = DEFAULT_GAIN, max_translation_m: float = 0.1) -> None:
        if task not in _PLANNERS:
            raise ValueError(f"no scripted expert for task {task!r}; experts exist for: {', '.join(_PLANNERS)}")
        self.task = task
        self.perturbation = perturbation or Perturbation()
        self.gain = gain
        self.max_translation_m = max_translation_m
        self.waypoints: list[Waypoint] = []
        self._i = 0
        self._steps_here = 0

    def plan(self, priv: dict) -> None:
        self.waypoints = _PLANNERS[self.task](priv, self.perturbation)
        self._i = 0
        self._steps_here = 0

    @property
    def done(self) -> bool:
        return self._i >= len(self.waypoints)

    @property
    def phase(self) -> int:
        return self._i

    def distance_to_waypoint(self, priv: dict) -> float:
        """m from the TCP to the current waypoint (0 once the plan is done)."""
        return 0.0 if self.done else float(np.linalg.norm(self.waypoints[self._i].target - priv["tcp"]))

    @property
    def reaching(self) -> bool:
        """Moving toward a waypoint with the gripper open, before the first close (the approach)."""
        return not self.done and all(w.gripper > 0 for w in self.waypoints[: self._i + 1])

    def act(self, priv: dict) -> np.ndarray:
        """7-d normalised action toward the current waypoint; holds still once the plan is done."""
        tcp = priv["tcp"]
        if self.done:
            last = self.waypoints[-1].gripper if self.waypoints else 1.0
            return np.array([0, 0, 0, 0, 0, 0, last], dtype=np.float32)
        wp = self.waypoints[self._i]
        delta = wp.target - tcp
        reached = np.linalg.norm(delta) < wp.tolerance and self._steps_here >= wp.min_steps
        if reached or self._steps_here >= wp.max_steps:
            self._i += 1
            self._steps_here = 0
            return self.act(priv)
        self._steps_here += 1
        move = np.clip(self.gain * delta / self.max_translation_m, -wp.speed, wp.speed)
        return np.concatenate([move, np.zeros(3), [wp.gripper]]).astype(np.float32)


def _pick_cube(priv: dict, p: Perturbation) -> list[Waypoint]:
    cube, goal = priv["cube"], priv["goal"]
    grasp = cube.copy()
    if p.kind == "grasp_offset":
        grasp = grasp + p.offset
    place = goal + (p.offset if p.kind == "place_offset" else 0.0)
    above = grasp + np.array([0, 0, 0.08])
    return [
        Waypoint(above, +1.0, tolerance=0.015),
        Waypoint(grasp, +1.0, tolerance=0.008),
        Waypoint(grasp, -1.0, tolerance=1.0, min_steps=2),  # close the fingers in place
        Waypoint(grasp + np.array([0, 0, 0.06]), -1.0, tolerance=0.02),  # lift clear of the table
        Waypoint(place, -1.0, tolerance=0.01, max_steps=20),
        Waypoint(place, -1.0, tolerance=1.0, min_steps=3, max_steps=3),  # hold still (success needs a static robot)
    ]


def _push_cube(priv: dict, p: Perturbation) -> list[Waypoint]:
    """Push along the cube->goal line. PushCube succeeds once the cube's centre is within 0.1 m of the target
    (it starts 0.2 m away); a near-success push stops 1-3.5 cm short of that circle."""
    cube, goal = priv["cube"], priv["goal"]
    direction = goal[:2] - cube[:2]
    distance = np.linalg.norm(direction)
    direction = direction / (distance + 1e-9)
    hs = priv.get("cube_half_size", 0.02)
    side = np.array([-direction[1], direction[0]])
    travel = distance  # cube centre onto the target centre
    lateral = 0.0
    if p.kind == "place_offset":
        travel = distance - 0.1 - (np.linalg.norm(p.offset[:2]) - 0.025)
    elif p.kind == "grasp_offset":
        lateral = hs + np.linalg.norm(p.offset[:2])  # the fingers pass beside the cube and barely touch it
    behind = np.append(cube[:2] - direction * (hs + 0.03) + side * lateral, hs)
    end = np.append(cube[:2] + direction * (travel - hs) + side * lateral, hs)
    return [
        Waypoint(behind + np.array([0, 0, 0.06]), -1.0, tolerance=0.015),
        Waypoint(behind, -1.0, tolerance=0.01),
        Waypoint(end, -1.0, tolerance=0.01, max_steps=30, speed=0.25),
        Waypoint(end, -1.0, tolerance=1.0, min_steps=2, max_steps=2),
    ]


def _stack_cube(priv: dict, p: Perturbation) -> list[Waypoint]:
    a, b = priv["cubeA"], priv["cubeB"]
    hs = priv.get("cube_half_size", 0.02)
    grasp = a + (p.offset if p.kind == "grasp_offset" else 0.0)
    place = b + np.array([0, 0, 2 * hs + 0.005]) + (p.offset if p.kind == "place_offset" else 0.0)
    return [
        Waypoint(grasp + np.array([0, 0, 0.08]), +1.0, tolerance=0.015),
        Waypoint(grasp, +1.0, tolerance=0.008),
        Waypoint(grasp, -1.0, tolerance=1.0, min_steps=2),
        Waypoint(grasp + np.array([0, 0, 0.08]), -1.0, tolerance=0.02),
        Waypoint(place + np.array([0, 0, 0.04]), -1.0, tolerance=0.01),
        Waypoint(place, -1.0, tolerance=0.008),
        Waypoint(place, +1.0, tolerance=1.0, min_steps=3, max_steps=3),  # release
        Waypoint(place + np.array([0, 0, 0.05]), +1.0, tolerance=0.02),
    ]


_PLANNERS = {"PickCube-v1": _pick_cube, "PushCube-v1": _push_cube, "StackCube-v1": _stack_cube}


class ExpertSource:
    """The scripted expert as an `robot.runner.ActionSource`: plans from the simulator's privileged state at
    the episode start, then answers one action per step (a chunk of one). ``done``: the plan is finished.

    ``action_noise`` > 0 perturbs each *executed* translation command of the approach (gripper open, before the
    first close) with Gaussian noise of that std (normalised action units, fading within 4 cm of the waypoint;
    DART, Laskey et al. 2017): the arm is pushed off the expert's path and the expert's next actions
    bring it back, so the demonstrations contain the corrections a cloned policy needs once its own errors take it
    off the path. The expert's own, noise-free action of every step is kept in ``labels`` (the episode records what
    was executed; `collect` stores the labels as ``extras["expert_action"]``)."""

    def __init__(self, sim, perturbation: Perturbation | None = None, max_translation_m: float = 0.1,
                 action_noise: float = 0.0, rng: np.random.Generator | None = None, gain: float = DEFAULT_GAIN) -> None:
        if not (gain > 0 and np.isfinite(gain)):
            raise ValueError(f"expert_gain: must be > 0, got {gain}")
        if not (action_noise >= 0 and np.isfinite(action_noise)):
            raise ValueError(f"action_noise: must be >= 0, got {action_noise}")
        self.sim = sim
        self.expert = ScriptedExpert(sim.config.task, perturbation, gain=gain, max_translation_m=max_translation_m)
        self.action_noise = float(action_noise)
        self.rng = rng or np.random.default_rng(0)
        self.labels: list[np.ndarray] = []

    def reset(self, instruction: str) -> None:
        self.expert.plan(self.sim.privileged())
        self.labels = []

    def next_chunk(self, obs) -> np.ndarray:
        a = self.expert.act(self.sim.privileged())
        self.labels.append(a)
        # Only while reaching with an open gripper: noise while the fingers close or the cube is carried would
        # make the demonstrations fail (a cube knocked out of the grasp, a robot never static at the goal).
        # The noise fades within 4 cm of the waypoint, so the expert still settles inside its tolerance and grasps.
        if self.action_noise > 0 and self.expert.reaching:
            scale = min(1.0, self.expert.distance_to_waypoint(self.sim.privileged()) / 0.04)
            a = a.copy()
            a[:3] = np.clip(a[:3] + self.rng.normal(0.0, self.action_noise * scale, 3), -1.0, 1.0)
        return a[None]

    def labels_for(self, actions: np.ndarray) -> np.ndarray:
        """The expert's noise-free action for each of an episode's recorded steps, (T, 7) float32; steps the
        expert was not asked about (the runner's closing hold) keep the recorded action."""
        out = np.asarray(actions, dtype=np.float32).copy()
        n = min(len(out), len(self.labels))
        if n:
            out[:n] = np.stack(self.labels[:n])
        return out

    @property
    def done(self) -> bool:
        return self.expert.done
