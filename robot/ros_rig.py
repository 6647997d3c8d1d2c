"""A simulated rig reached over ROS 2 topics (rclpy-free; `robot.nodes.policy_node` in ``mode: deploy`` is its shell).

`wvl robot deploy` plays each evaluation episode on a `robot.rig.Rig`: ``reset_scene(i, stride)`` puts scene i in
front of the arm and returns the seed played, ``success()`` is the simulator's task flag. Behind ROS 2 the simulator
is `robot.nodes.sim_arm_node` (a `robot.arms.sim_driver.SimArmDriver`), reached through two topics: the driver's
event topic (``reset <seed> <stride>``: `robot.sim.rollout.reset_unsolved` there, solved-at-reset scenes replaced by
seed + stride, ...) and its status topic (JSON every period and after every command: seed, resets, step, success,
commands received, instruction). `SimTopics` is that client; `ros_sim_rig` makes the `Rig` whose arm and camera are
the policy node's `TopicArm` / `TopicCamera`, so `robot.deploy.deploy` -> `robot.rig.play_episodes` ->
`robot.runner.EpisodeRunner` run unchanged: same seeds, same success rule, same Episode fields as on the
in-process simulated rig.

**Lockstep.** With the driver stepping once per twist (``step_on: command``) and the policy node's ``lockstep`` on,
sending an action returns once the driver has stepped with it and its state and frame have arrived (`wait_applied`
+ `wait_fresh`), as the in-process simulated arm's ``send_action`` returns after its step: every observation and
success flag is the one after the previous action, whatever the machine's load. `success` waits (bounded) for the
driver's status covering every twist this client sent since the reset (``commands`` in its status), so the flag read
right after the last action of an episode is the flag after that action; `reset` first waits for the previous
episode's hold command to be applied, then resets, then waits until the camera frame and the arm state the policy
will see are the new scene's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class SimTopics:
    """The client side of a simulated arm driver's event and status topics. ``publish_event(text)``: publishes
    on the driver's event topic; the shell feeds `on_status` from its status topic and calls `note_command`
    for every twist it publishes."""

    def __init__(self, publish_event: Callable[[str], None], *, command_wait_s: float = 0.5, reset_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.publish_event, self.command_wait_s, self.reset_timeout_s, self.clock = publish_event, command_wait_s, reset_timeout_s, clock
        self._cond = threading.Condition()
        self.status: dict[str, Any] | None = None
        self._base = 0  # the driver's command count when this client last synchronised
        self._sent = 0  # twists this client sent since then
        self.late = 0  # success() reads that gave up waiting for the driver (a lost or slow command)

    # ------------------------------------------------------------------ inputs (subscription / publisher threads)
    def on_status(self, text: str) -> None:
        try:
            d = json.loads(text)
        except ValueError:
            log.warning("sim status: not JSON: %r", text[:80])
            return
        if not isinstance(d, dict):
            return
        with self._cond:
            self.status = d
            self._cond.notify_all()

    def note_command(self) -> None:
        with self._cond:
            self._sent += 1

    # ------------------------------------------------------------------ waits
    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: self.status is not None and pred(self.status), timeout=timeout_s):
                raise TimeoutError(f"simulated arm driver: {what} not within {timeout_s:.1f} s (last status: {self.status})")
            return dict(self.status)

    def first_status(self, timeout_s: float) -> dict[str, Any]:
        return self.wait(lambda d: True, timeout_s, "a first status message (is sim_arm_node up, its status topic right?)")

    def _applied(self, d: dict[str, Any]) -> bool:
        return int(d.get("commands", 0)) >= self._base + self._sent

    def sync(self) -> None:
        """Count commands from now on (an episode started by an event, without a reset through this client)."""
        with self._cond:
            self._base = int((self.status or {}).get("commands", 0))
            self._sent = 0

    def reset(self, seed: int, stride: int = 1) -> tuple[int, float]:
        """Reset the driver's scene to the first unsolved of seed, seed + stride, ...: (seed played, the stamp of the
        driver's first output of the new scene)."""
        try:  # the previous episode's last (hold) command steps the old scene, as in-process
            self.wait(self._applied, self.command_wait_s, "the previous commands applied")
        except TimeoutError:
            log.warning("sim reset: the driver has not received every command sent (%s)", self.status)
        with self._cond:
            n = int((self.status or {}).get("resets", 0))
        self.publish_event(f"reset {int(seed)} {int(stride)}")
        d = self.wait(lambda s: int(s.get("resets", 0)) > n, self.reset_timeout_s, f"the reset to seed {seed}")
        with self._cond:
            self._base, self._sent = int(d.get("commands", 0)), 0
        return int(d["seed"]), float(d["stamp"])

    def wait_applied(self, timeout_s: float) -> float | None:
        """The stamp of the driver's first status covering every twist sent (None after ``timeout_s``, counted late)."""
        with self._cond:
            if self._cond.wait_for(lambda: self.status is not None and self._applied(self.status), timeout=timeout_s):
                return float(self.status.get("stamp", 0.0))
            self.late += 1
            return None

    def success(self) -> bool:
        """The simulator's task flag after every command sent so far (bounded wait: ``command_wait_s``)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.status is not None and self._applied(self.status), timeout=self.command_wait_s)
            if not ok:
                self.late += 1
            return bool((self.status or {}).get("success"))


def wait_fresh(arm: Any, cameras: dict[str, Any], stamp: float, timeout_s: float) -> None:
    """Until the arm's state and every camera's newest frame are at least as new as ``stamp`` (driver clock)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            arm_ok = arm.read_state().stamp >= stamp - 1e-6
        except ConnectionError:
            arm_ok = False
        cams_ok = all((cam.latest_stamp() or float("-inf")) >= stamp - 1e-6 for cam in cameras.values())
        if arm_ok and cams_ok:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no state / frame of the new scene (stamp {stamp:.3f}) within {timeout_s:.1f} s")
        time.sleep(0.005)


def ros_sim_rig(arm: Any, cameras: dict[str, Any], sim: SimTopics, instruction: str, *, seed_base: int = 0,
                fresh_timeout_s: float = 5.0):
    """A `robot.rig.Rig` over topics: scene i is ``seed_base + i`` on the driver (solved ones replaced by + stride)."""
    from robot.rig import Rig

    def reset_scene(i: int, stride: int = 1) -> int:
        played, stamp = sim.reset(seed_base + int(i), stride)
        wait_fresh(arm, cameras, stamp, fresh_timeout_s)
        return played

    return Rig(arm, dict(cameras), instruction, reset_scene, sim.success, lambda: None)
