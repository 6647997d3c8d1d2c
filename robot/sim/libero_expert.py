"""A scripted pick-and-place expert for LIBERO tasks whose goal is one `(In obj region)` / `(On obj target)`.

That covers LIBERO-Object (all 10 tasks: "pick up the X and place it in the basket") and the pick-and-place
tasks of LIBERO-Spatial/Goal. It reads privileged state (`LiberoSim.privileged()`: TCP, finger axis, object
boxes, goal regions) and drives the contract's 7-d action toward Cartesian waypoints:

    above the object -> down to its centre -> close -> lift clear of the container -> above the target
    -> lower -> open -> back up

with a top-down grasp whose fingers close across the object's short horizontal side (yaw from the object's
own frame; cans need none) and a roll/pitch correction that keeps the hand pointing down. The outcome is
always the benchmark's own success predicate, never assumed. Tasks with other goals (open a drawer, turn on
the stove) get a clear error naming the goal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRANSLATION_SCALE_M = 0.05  # OSC_POSE: action 1.0 = 0.05 m per step
ROTATION_SCALE_RAD = 0.5
# Panda hand geometry (measured in LIBERO's model): the fingers open to 8 cm; the hand reaches ~11 cm either
# side of the grip site along the finger axis and ~3.5 cm across it, its underside ~4.5 cm above the grip site.
MAX_OPENING_M = 0.075
HAND_HALF_LENGTH_M, HAND_HALF_WIDTH_M, HAND_ABOVE_TCP_M = 0.11, 0.035, 0.045
FINGER_HALF_SPAN_M = 0.05


@dataclass(frozen=True)
class Waypoint:
    target: np.ndarray  # (3,) TCP (grip site) position, m, world frame
    gripper: float  # contract: -1 close, +1 open
    tolerance: float = 0.01  # m
    max_steps: int = 40
    min_steps: int = 0
    align_yaw: bool = True  # turn the fingers across the object's short side on the way


class UnsupportedGoalError(ValueError):
    pass


def pick_place_goal(goal: list[list[str]]) -> tuple[str, str]:
    """(object, target) of a single In/On goal; target is a region site or an object name."""
    if len(goal) != 1 or len(goal[0]) != 3 or goal[0][0].lower() not in ("in", "on"):
        raise UnsupportedGoalError(f"goal: the scripted LIBERO expert handles one (In|On object target) predicate, got {goal}")
    return goal[0][1], goal[0][2]


def choose_finger_axis(obj: dict, others: dict[str, dict], grasp: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World direction (3,) for the fingers to close along: one across which the object fits between the
    open fingers, chosen to keep the hand and fingers clear of neighbouring objects; ties go to the least
    rotation from the current finger axis."""
    axes, ext = obj["axes"], obj["extent"]  # (2, 3), (2,)
    cur_yaw = np.arctan2(current[1], current[0])
    best, best_score = None, -np.inf
    for yaw in np.linspace(0.0, np.pi, 12, endpoint=False):
        f = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        perp = np.array([-f[1], f[0], 0.0])
        width = abs(f @ axes[0]) * ext[0] + abs(f @ axes[1]) * ext[1]  # the footprint's span along f
        if width > MAX_OPENING_M:
            continue
        clearance = np.inf
        for o in others.values():
            olo, ohi = o["aabb"]
            if ohi[2] < grasp[2] - 0.02:  # lower than the fingertips: cannot be hit
                continue
            rel = o["centre"] - grasp
            radius = float(np.max(o["extent"])) / 2
            fingers = np.hypot(max(abs(rel @ f) - FINGER_HALF_SPAN_M, 0), max(abs(rel @ perp) - 0.01, 0)) - radius
            clearance = min(clearance, fingers)
            if ohi[2] > grasp[2] + HAND_ABOVE_TCP_M:  # tall enough to reach the hand
                hand = np.hypot(max(abs(rel @ f) - HAND_HALF_LENGTH_M, 0), max(abs(rel @ perp) - HAND_HALF_WIDTH_M, 0)) - radius
                clearance = min(clearance, hand)
        turn = abs((yaw - cur_yaw + np.pi / 2) % np.pi - np.pi / 2)
        score = min(clearance, 0.05) - 0.01 * turn  # beyond 5 cm of clearance, prefer turning less
        if score > best_score:
            best, best_score = f, score
    if best is None:  # wider than the gripper every way: try across its shorter side
        best = axes[int(np.argmin(ext))]
    return np.asarray(best, dtype=np.float64)


class LiberoPickPlaceExpert:
    """Closed-loop waypoint follower. `plan(privileged)` after reset, then `act(privileged)` every step.

    ``grasp_offset`` / ``place_offset`` (m, world frame, (3,)) shift where it grasps / releases: the
    near-success perturbations. ``lift_m`` is the carry clearance above the target's top."""

    def __init__(self, grasp_offset: np.ndarray | None = None, place_offset: np.ndarray | None = None,
                 gain: float = 4.0, rot_gain: float = 1.5, lift_m: float = 0.06) -> None:
        self.grasp_offset = np.zeros(3) if grasp_offset is None else np.asarray(grasp_offset, dtype=np.float64)
        self.place_offset = np.zeros(3) if place_offset is None else np.asarray(place_offset, dtype=np.float64)
        self.gain, self.rot_gain, self.lift_m = gain, rot_gain, lift_m
        self.waypoints: list[Waypoint] = []
        self.grasp_axis = np.array([0.0, 1.0, 0.0])  # world direction the fingers should close along
        self._i = 0
        self._steps_here = 0

    # ------------------------------------------------------------------ planning
    def plan(self, priv: dict) -> None:
        obj_name, target = pick_place_goal(priv["goal"])
        objects, regions = priv["objects"], priv["regions"]
        if obj_name not in objects:
            raise UnsupportedGoalError(f"goal: object {obj_name!r} not in the scene ({sorted(objects)})")
        obj = objects[obj_name]
        lo, hi = obj["aabb"]
        centre = obj["centre"]
        height = hi[2] - lo[2]
        # Grasp the object's middle, but keep the fingertips ~1.5 cm above the floor/table under it.
        grasp = np.array([centre[0], centre[1], max(centre[2], lo[2] + min(0.02, height / 2))])
        others = {n: o for n, o in objects.items() if n != obj_name}
        self.grasp_axis = choose_finger_axis(obj, others, grasp, priv["finger_axis"])
        grasp = grasp + self.grasp_offset
        above_obj = grasp + np.array([0, 0, max(0.08, height / 2 + 0.05)])

        if target in regions:
            place_xy = regions[target]["pos"][:2]
            owner = next((n for n in objects if target.startswith(n)), None)
            top = objects[owner]["aabb"][1][2] if owner else regions[target]["pos"][2] + regions[target]["size"][2]
        elif target in objects:
            tlo, thi = objects[target]["aabb"]
            place_xy, top = (tlo[:2] + thi[:2]) / 2, thi[2]
        else:
            raise UnsupportedGoalError(f"goal: target {target!r} is neither an object nor a region of the scene")
        grip_to_bottom = grasp[2] - lo[2]  # the object hangs this far below the TCP once grasped
        carry_z = top + grip_to_bottom + self.lift_m
        release_z = top + grip_to_bottom + 0.015
        place = np.array([place_xy[0], place_xy[1], release_z]) + self.place_offset
        carry_above_obj = np.array([grasp[0], grasp[1], carry_z])
        carry_above_target = np.array([place[0], place[1], carry_z])
        self.waypoints = [
            Waypoint(above_obj, +1.0, tolerance=0.015),
            Waypoint(grasp, +1.0, tolerance=0.008),
            Waypoint(grasp, -1.0, tolerance=1.0, min_steps=12, max_steps=12, align_yaw=False),  # fingers ramp ~8 steps
            Waypoint(carry_above_obj, -1.0, tolerance=0.02, align_yaw=False),
            Waypoint(carry_above_target, -1.0, tolerance=0.015, max_steps=60, align_yaw=False),
            Waypoint(place, -1.0, tolerance=0.015, align_yaw=False),
            Waypoint(place, +1.0, tolerance=1.0, min_steps=10, max_steps=10, align_yaw=False),  # release, let it drop
            Waypoint(place + np.array([0, 0, 0.08]), +1.0, tolerance=0.02, align_yaw=False),
        ]
        self._i = 0
        self._steps_here = 0

    @property
    def done(self) -> bool:
        return self._i >= len(self.waypoints)

    @property
    def phase(self) -> int:
        return self._i

    # ------------------------------------------------------------------ control
    def act(self, priv: dict) -> np.ndarray:
        """(7,) contract action toward the current waypoint; holds still once the plan is done."""
        if self.done:
            last = self.waypoints[-1].gripper if self.waypoints else 1.0
            return np.array([0, 0, 0, 0, 0, 0, last], dtype=np.float32)
        wp = self.waypoints[self._i]
        delta = wp.target - priv["tcp"]
        if (np.linalg.norm(delta) < wp.tolerance and self._steps_here >= wp.min_steps) or self._steps_here >= wp.max_steps:
            self._i += 1
            self._steps_here = 0
            return self.act(priv)
        self._steps_here += 1
        move = np.clip(self.gain * delta / TRANSLATION_SCALE_M, -1.0, 1.0)
        rot = self._rotation(priv, wp.align_yaw)
        return np.concatenate([move, rot, [wp.gripper]]).astype(np.float32)

    def _rotation(self, priv: dict, align_yaw: bool) -> np.ndarray:
        """World-frame axis-angle that points the hand down and (optionally) turns the finger axis onto
        `grasp_axis` (mod pi), as an OSC action in [-1, 1]."""
        approach = priv["approach_axis"]  # (3,) the hand's pointing direction, want (0, 0, -1)
        down = np.array([0.0, 0.0, -1.0])
        tilt = np.cross(approach, down)  # axis * sin(angle)
        rotvec = tilt * (np.arcsin(np.clip(np.linalg.norm(tilt), 0, 1)) / max(np.linalg.norm(tilt), 1e-9))
        if align_yaw:
            f, g = priv["finger_axis"][:2], self.grasp_axis[:2]
            if np.linalg.norm(f) > 1e-6 and np.linalg.norm(g) > 1e-6:
                yaw = np.arctan2(g[1], g[0]) - np.arctan2(f[1], f[0])
                yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2  # the gripper is symmetric: mod pi
                rotvec = rotvec + np.array([0.0, 0.0, yaw])
        return np.clip(self.rot_gain * rotvec / ROTATION_SCALE_RAD, -1.0, 1.0)
