"""A teleop device as the episode runner's action source (`robot.runner.ActionSource` + `StatusSource`).

Each control step the runner first asks `status()` - this reads the device once: deadman, the time the
device last reported (the safety watchdog's input), an episode event, whether it is still connected - and
then `next_chunk(obs)`, which maps that same reading to a one-action chunk with `TeleopMapping`.
"""

from __future__ import annotations

import numpy as np

from robot.arms.base import ArmLimits
from robot.runner import Observation, SourceStatus
from teleop.command import TeleopCommand
from teleop.device import TeleopDevice
from teleop.mapping import TeleopMapping


class TeleopSource:
    """``realtime``: device stamps are on the monotonic clock, like a real-time control loop's; in simulated
    time they are meaningless to the loop, so commands count as issued "now" (the watchdog then only
    catches a device that disconnects, which ends the episode anyway)."""

    def __init__(self, device: TeleopDevice, mapping: TeleopMapping, hz: float, limits: ArmLimits, realtime: bool = True) -> None:
        self.device, self.mapping, self.hz, self.limits, self.realtime = device, mapping, hz, limits, realtime
        self._cmd: TeleopCommand | None = None
        self._gripper = 1.0
        self.instruction = ""

    def reset(self, instruction: str) -> None:
        self.instruction, self._cmd, self._gripper = instruction, None, 1.0
        if hasattr(self.device, "on_episode_start"):
            self.device.on_episode_start()

    def status(self) -> SourceStatus:
        cmd = self._cmd = self.device.read()
        return SourceStatus(
            enabled=cmd.enabled,
            stamp=cmd.stamp if self.realtime else None,
            event=None if cmd.event is None else cmd.event.value,
            connected=self.device.is_connected,
        )

    def next_chunk(self, obs: Observation) -> np.ndarray:
        cmd = self._cmd if self._cmd is not None else self.device.read()
        self._cmd = None
        a = self.mapping.to_action(cmd, self.hz, self.limits, self._gripper)
        self._gripper = float(a[6])
        return a[None]  # (1, 7): teleop re-plans every step
