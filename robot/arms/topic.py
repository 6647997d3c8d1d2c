"""An arm behind topics: state arrives from subscriptions, commands leave through a publish callback.

This is the policy node's arm (and any rig whose arm is driven by another process). The ROS shell feeds
`update_state` from ``sensor_msgs/JointState`` (+ the EE pose from the vendor broadcaster or TF) and gives
a publisher for the command form the controller wants:

- ``twist``: each 7-d action becomes a base-frame twist (m/s, rad/s = action x arm limits x rate) for MoveIt
  Servo's ``delta_twist_cmds`` (`robot.rosmsg.twist_stamped_msg`), plus the gripper target;
- ``joint_trajectory``: each action becomes the next EE target, turned into joint positions by an ``ik``
  function the rig provides (the robot's kinematics are not ours to guess), sent as a one-point
  ``JointTrajectory`` for a joint_trajectory_controller (`robot.rosmsg.joint_trajectory_msg`).

`read_state` refuses a state older than ``max_state_age_s`` (a dead driver must not look alive).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from robot.arms.base import Arm, ArmLimits, ArmState
from robot.errors import DeviceNotConnectedError

OUTPUTS = ("twist", "joint_trajectory")


class TopicArm(Arm):
    def __init__(self, output: str, publish: Callable[..., None], hz: float, limits: ArmLimits = ArmLimits(),
                 ik: Callable[[ArmState, np.ndarray], np.ndarray] | None = None, max_state_age_s: float = 0.5,
                 name: str = "topic_arm", clock: Callable[[], float] = time.monotonic) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output: {output!r} is not one of {OUTPUTS}")
        if output == "joint_trajectory" and ik is None:
            raise ValueError("output=joint_trajectory needs an ik(state, ee_target) -> joint positions function for this robot")
        self.output, self.publish, self.hz, self.limits, self.ik = output, publish, hz, limits, ik
        self.max_state_age_s, self.name, self.clock = max_state_age_s, name, clock
        self._lock = threading.Lock()
        self._state: ArmState | None = None
        self._received = -np.inf
        self._connected = False

    def update_state(self, joints: np.ndarray, ee_pose: np.ndarray, gripper: float, stamp: float) -> None:
        with self._lock:
            self._state = ArmState(np.asarray(joints, np.float32), np.asarray(ee_pose, np.float32), float(gripper), float(stamp))
            self._received = self.clock()

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def read_state(self) -> ArmState:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name}: not connected")
        with self._lock:
            age = self.clock() - self._received
            if self._state is None or age > self.max_state_age_s:
                raise DeviceNotConnectedError(f"{self.name}: no robot state for {age:.2f} s (driver down? joint_states topic?)")
            return self._state

    def send_action(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, np.float64).reshape(7), -1, 1)
        if self.output == "twist":
            twist = np.concatenate([a[:3] * self.limits.max_translation_m, a[3:6] * self.limits.max_rotation_rad]) * self.hz
            self.publish(twist, float(a[6]))
        else:
            state = self.read_state()
            target = np.asarray(state.ee_pose, np.float64).copy()
            target[:3] += a[:3] * self.limits.max_translation_m
            joints = np.asarray(self.ik(state, np.concatenate([target, a[3:6] * self.limits.max_rotation_rad])), np.float64)
            self.publish(joints[None], 1.0 / self.hz, float(a[6]))
        return a.astype(np.float32)
