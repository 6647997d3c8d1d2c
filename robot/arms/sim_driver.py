"""A simulated arm presented the way a real arm's ROS 2 driver presents it (rclpy-free; `robot.nodes.sim_arm_node`
is its shell): Cartesian twists in (MoveIt Servo's ``delta_twist_cmds``), a gripper target in, and per driver
period one simulator step, then the joint state, the EE pose and a camera frame out.

The twist is the inverse of `robot.arms.topic.TopicArm`'s: a twist held for one period moves the EE by
``twist * period``, which is ``action * arm.limits`` -- the action the simulated arm takes. A twist older than
``command_timeout_s`` is zero motion (Servo's incoming-command timeout: a dead policy must not keep the arm
moving). Two stepping modes: ``timer`` (a driver: the newest command each period, the clocks of the two
processes are not aligned, as on hardware) and ``command`` (one step per command received: the simulated robot
in lockstep with the policy, what `wvl robot deploy` measures).

Backends: ``kinematic`` (`robot.arms.fake.KinematicArm` and a rendered top view in which the gripper is a disc,
no simulator: tests and benchmarks) and ``maniskill`` (`robot.sim.maniskill.SimRobot`, imported lazily).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from robot.arms.base import Arm, ArmState


@dataclass
class DriverOutput:
    state: ArmState
    rgb: np.ndarray | None  # (H, W, 3) uint8, None while the camera is off
    stamp: float  # monotonic seconds of this step
    step: int
    success: bool | None  # the simulator's task flag (None: no task)


def render_topdown(ee_pose: np.ndarray, gripper: float, size: int, extent_m: float = 0.6) -> np.ndarray:
    """A (size, size, 3) uint8 view from above: a smooth floor and the gripper as a disc at its xy, larger when
    higher, brighter when open. ``extent_m``: half the width of the floor shown, around the origin."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.stack([40 + 80 * xx / size, 60 + 60 * yy / size, np.full_like(xx, 90)], -1)
    cx = (float(ee_pose[0]) / extent_m * 0.5 + 0.5) * (size - 1)
    cy = (float(ee_pose[1]) / extent_m * 0.5 + 0.5) * (size - 1)
    r = max(1.5, size * (0.04 + 0.1 * max(0.0, float(ee_pose[2]))))
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[disc] = (230, 120 + 100 * float(np.clip(gripper, 0, 1)), 40)
    return img.clip(0, 255).astype(np.uint8)


class SimArmDriver:
    """One simulated arm + camera behind the driver interface. Thread-safe: commands arrive on subscription
    threads, `tick` runs on the driver's timer."""

    def __init__(self, arm: Arm, frame: Callable[[], np.ndarray], *, reset: Callable[[int, int], int] | None = None,
                 success: Callable[[], bool] | None = None, hz: float = 10.0, command_timeout_s: float = 0.3,
                 clock: Callable[[], float] = time.monotonic, close: Callable[[], None] | None = None,
                 instruction: str = "") -> None:
        self.arm, self._frame, self._reset, self._success, self._close = arm, frame, reset, success, close
        self.instruction = instruction
        self.hz, self.command_timeout_s, self.clock = float(hz), float(command_timeout_s), clock
        self._lock = threading.Lock()  # the newest command
        self._sim_lock = threading.RLock()  # the simulator: stepped by the timer, reset by an event
        self._twist = np.zeros(6)
        self._twist_at = -math.inf
        self._gripper = 1.0
        self._camera_on = True
        self.step = 0
        self.seed: int | None = None
        self.resets = 0  # reset events done: a client waits for its own reset by this count (status "resets")
        self.commands = 0

    # ------------------------------------------------------------------ inputs
    def on_twist(self, twist: np.ndarray) -> None:
        tw = np.asarray(twist, np.float64).reshape(6)
        if not np.all(np.isfinite(tw)):
            return  # a NaN twist is dropped, as Servo drops it
        with self._lock:
            self._twist, self._twist_at = tw, self.clock()
            self.commands += 1

    def on_gripper(self, target: float) -> None:
        if math.isfinite(target):
            with self._lock:
                self._gripper = float(np.clip(target, -1.0, 1.0))

    def on_event(self, text: str) -> str:
        """``reset <seed> [stride]`` | ``camera_off`` | ``camera_on``; returns what was done (for the node's log).
        A reset plays the first of seed, seed + stride, ... whose scene is not solved at reset (the simulator's
        `robot.sim.rollout.reset_unsolved`, as every simulated episode); the status reports the seed played."""
        words = text.split()
        if not words:
            return "empty event ignored"
        if words[0] == "reset":
            try:
                seed = int(words[1]) if len(words) > 1 else 0
                stride = int(words[2]) if len(words) > 2 else 1
            except ValueError:
                return f"bad reset event {text!r} ignored (reset <seed> [stride])"
            with self._sim_lock:
                played = self._reset(seed, stride) if self._reset is not None else seed
                self.seed, self.step = played, 0
                self.resets += 1
                with self._lock:
                    self._twist, self._twist_at = np.zeros(6), -math.inf
                    self._gripper = 1.0
            return f"reset to seed {played}"
        if words[0] in ("camera_off", "camera_on"):
            self._camera_on = words[0] == "camera_on"
            return f"camera {'on' if self._camera_on else 'off'}"
        return f"unknown event {text!r} ignored (reset <seed> | camera_off | camera_on)"

    # ------------------------------------------------------------------ the driver period
    def action(self) -> np.ndarray:
        """The 7-d action of the newest command: twist * period / arm limits, gripper target; zero when stale."""
        with self._lock:
            fresh = self.clock() - self._twist_at <= self.command_timeout_s
            tw = self._twist if fresh else np.zeros(6)
            g = self._gripper
        lim = self.arm.limits
        a = np.concatenate([tw[:3] / (lim.max_translation_m * self.hz), tw[3:] / (lim.max_rotation_rad * self.hz), [g]])
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def tick(self, move: bool = True) -> DriverOutput:
        """One driver period: step the simulator with `action` (``move=False``: publish only), read everything back."""
        with self._sim_lock:
            if move:
                self.arm.send_action(self.action())
                self.step += 1
            state = self.arm.read_state()
            rgb = self._frame() if self._camera_on else None
            success = self._success() if self._success is not None else None
            return DriverOutput(state, rgb, self.clock(), self.step, success)

    def status_json(self, out: DriverOutput) -> str:
        return json.dumps({"seed": self.seed, "resets": self.resets, "step": out.step, "success": out.success,
                           "stamp": out.stamp, "commands": self.commands, "instruction": self.instruction})

    def close(self) -> None:
        if self._close is not None:
            self._close()


def make_sim_driver(cfg: Any) -> SimArmDriver:
    """The driver for a `robot.nodes.config.SimArmNodeConfig`."""
    if cfg.kind == "kinematic":
        from robot.arms.fake import KinematicArm, KinematicArmConfig

        arm = KinematicArm(KinematicArmConfig())  # base frame, starts at (0, 0, 0.3)
        arm.connect()

        def frame() -> np.ndarray:
            s = arm.read_state()
            return render_topdown(s.ee_pose, s.gripper, cfg.image_size)

        def reset(seed: int, stride: int = 1) -> int:
            arm.reset()
            return seed

        return SimArmDriver(arm, frame, reset=reset, hz=cfg.rate_hz, command_timeout_s=cfg.command_timeout_s, close=arm.disconnect)
    from robot.sim.maniskill import ManiSkillConfig, SimRobot
    from robot.sim.rollout import reset_unsolved

    sim_cfg = json.loads(cfg.sim_json) if cfg.sim_json else {}
    robot = SimRobot(ManiSkillConfig.from_dict(sim_cfg))
    robot.connect()
    cam = robot.cameras[cfg.camera_name] if cfg.camera_name in robot.cameras else next(iter(robot.cameras.values()))
    reset_unsolved(robot.sim, cfg.seed)
    if abs(float(robot.config.control_hz) - cfg.rate_hz) > 1e-9:
        raise ValueError(f"sim_arm_node.rate_hz ({cfg.rate_hz}) differs from the simulator's control_hz ({robot.config.control_hz})")
    return SimArmDriver(robot.arm, lambda: cam.read().rgb, reset=lambda seed, stride=1: reset_unsolved(robot.sim, seed, stride),
                        success=lambda: bool(robot.sim.success), hz=cfg.rate_hz, command_timeout_s=cfg.command_timeout_s,
                        close=robot.close, instruction=robot.instruction)
