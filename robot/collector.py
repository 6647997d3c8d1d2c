"""Episodes from message streams: the logic of the ROS 2 collector node, without ROS.

The node shell subscribes to camera images, the robot state, the teleop node's 7-d action and the episode
events, and forwards each message here (converted with `robot.rosmsg`). A timer calls `tick()` at the
control rate; while recording, each tick records one step from the newest inputs - if every camera frame
is fresh (a stalled camera is detected, never silently repeated: after ``max_stale_ticks`` stale ticks the
episode ends with reason ``camera_stalled`` and keeps its frames). Events drive the SANS protocol
(`SansTally` asks for success / near-success about 1:1):

- ``start``: begin recording (the operator reset the scene); while idle ``save_next`` starts too, so a
  device without a start button (a two-button SpaceMouse: right button, a gamepad: start) can begin;
- ``success`` / ``near_success`` / ``failure``: end and label the episode -> sink;
- ``save_next`` / ``stop``: end the episode and wait for a label event;
- ``rerecord``: discard the episode (recording or waiting for its label).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from robot.episode import Episode, EpisodeRecorder

log = logging.getLogger(__name__)

LABELS = ("success", "near_success", "failure")


class SansTally:
    """Counts per outcome and which outcome the next demonstration should have (success : near = targets)."""

    def __init__(self, success: int, near_success: int) -> None:
        if success < 0 or near_success < 0 or success + near_success < 1:
            raise ValueError(f"success/near_success: need non-negative targets, at least one episode; got {success}/{near_success}")
        self.target = {"success": success, "near_success": near_success}
        self.counts: Counter = Counter()
        self.discarded = 0

    def requested(self) -> str | None:
        n, t = self.counts, self.target
        need_s, need_n = t["success"] - n["success"], t["near_success"] - n["near_success"]
        if need_s <= 0 and need_n <= 0:
            return None
        if need_n <= 0:
            return "success"
        if need_s <= 0:
            return "near_success"
        return "success" if n["success"] * t["near_success"] <= n["near_success"] * t["success"] else "near_success"

    def line(self) -> str:
        n, t = self.counts, self.target
        return (f"success {n['success']}/{t['success']}  near_success {n['near_success']}/{t['near_success']}  "
                f"failure {n['failure']}  unlabeled {n['unlabeled']}  discarded {self.discarded}")


@dataclass(frozen=True)
class CollectorConfig:
    task: str = "pick up the cube"
    cameras: tuple[str, ...] = ("front",)
    hz: float = 10.0
    rig: str = "real"
    max_steps: int = 600
    max_age_s: float = 0.2  # a camera frame or robot state older than this at a tick is stale
    max_stale_ticks: int = 10  # stale ticks in a row before the episode ends (camera_stalled)
    command_timeout_s: float = 0.3  # no action message for this long: record a hold (the arm holds too)
    success: int = 10
    near_success: int = 10

    def __post_init__(self) -> None:
        if not self.task.strip():
            raise ValueError("collector.task: the task instruction is required")
        if not self.cameras:
            raise ValueError("collector.cameras: at least one camera is required")
        for name in ("hz", "max_age_s", "command_timeout_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"collector.{name}: must be a positive number, got {v!r}")
        if self.max_steps < 1 or self.max_stale_ticks < 1:
            raise ValueError("collector.max_steps / max_stale_ticks: must be >= 1")


@dataclass
class _Latest:
    value: Any = None
    stamp: float = -math.inf
    received: float = -math.inf  # monotonic host time


class StreamCollector:
    """``clock``: monotonic seconds (ages are computed on it). ``sink`` gets every labelled episode."""

    def __init__(self, config: CollectorConfig, sink: Callable[[Episode], None], clock: Callable[[], float] = time.monotonic,
                 on_prompt: Callable[[str], None] | None = None) -> None:
        self.config, self.sink, self.clock = config, sink, clock
        self.on_prompt = on_prompt or (lambda text: log.info("%s", text))
        self.tally = SansTally(config.success, config.near_success)
        self._images: dict[str, _Latest] = {c: _Latest() for c in config.cameras}
        self._depth: dict[str, np.ndarray | None] = {c: None for c in config.cameras}
        self._state = _Latest()
        self._action = _Latest()
        self._last_index: dict[str, float] = {}
        self.state = "idle"  # idle | recording | awaiting_label
        self._rec: EpisodeRecorder | None = None
        self._pending: Episode | None = None
        self._stale = 0
        self._end_reason = ""
        self.stale_ticks = 0
        self._prompt()

    # ------------------------------------------------------------------ inputs (any thread: the node serialises)
    def on_image(self, camera: str, rgb: np.ndarray, stamp: float, depth: np.ndarray | None = None) -> None:
        if camera not in self._images:
            return
        self._images[camera] = _Latest(np.asarray(rgb), stamp, self.clock())
        self._depth[camera] = depth

    def on_state(self, joints: np.ndarray, ee_pose: np.ndarray, gripper: float, stamp: float) -> None:
        self._state = _Latest((np.asarray(joints, np.float32), np.asarray(ee_pose, np.float32), float(gripper)), stamp, self.clock())

    def on_action(self, action: np.ndarray, stamp: float) -> None:
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape != (7,):
            log.warning("collector: ignoring an action of shape %s (expected 7)", a.shape)
            return
        self._action = _Latest(a, stamp, self.clock())

    def on_event(self, name: str) -> None:
        if name in ("start", "save_next") and self.state == "idle":
            self._begin()
        elif name in LABELS:
            if self.state == "recording":
                self._end("event:" + name)
            if self.state == "awaiting_label":
                self._save(name)
        elif name in ("save_next", "stop") and self.state == "recording":
            self._end("event:" + name)
            self.on_prompt("label the episode: success / near_success / failure, or rerecord to discard")
        elif name == "rerecord" and self.state in ("recording", "awaiting_label"):
            self.tally.discarded += 1
            self._rec, self._pending, self.state = None, None, "idle"
            self.on_prompt("discarded; " + self._prompt_text())

    # ------------------------------------------------------------------ the control-rate timer
    def tick(self) -> bool:
        """Record one step if recording and the inputs are fresh; returns whether a step was recorded."""
        if self.state != "recording":
            return False
        c, now = self.config, self.clock()
        stale = self.stale_inputs(now)
        if stale:
            self._stale += 1
            self.stale_ticks += 1
            if self._stale >= c.max_stale_ticks:
                self._end(f"camera_stalled: no fresh {', '.join(stale)} for {self._stale} ticks")
                self.on_prompt("the episode ended (stale input); label it or rerecord")
            return False
        self._stale = 0
        joints, ee, grip = self._state.value
        fresh_cmd = now - self._action.received <= c.command_timeout_s
        action = self._action.value if fresh_cmd else np.array([0, 0, 0, 0, 0, 0, 1.0 if grip >= 0.5 else -1.0], np.float32)
        repeated = any(self._last_index.get(n) == x.stamp for n, x in self._images.items())
        t = self._rec.timestamp_after_last(now)
        self._rec.add_step(
            timestamp=t, images={n: x.value for n, x in self._images.items()},
            depth={n: d for n, d in self._depth.items() if d is not None} or None,
            joints=joints, ee_pose=ee, gripper=grip, action=action, intervention=not fresh_cmd,
            extras={"frame_repeated": np.bool_(repeated), "command_age": np.float32(min(now - self._action.received, 1e3))},
        )
        self._last_index = {n: x.stamp for n, x in self._images.items()}
        if len(self._rec) >= c.max_steps:
            self._end("max_steps")
            self.on_prompt("max steps reached; label the episode")
        return True

    def stale_inputs(self, now: float | None = None) -> list[str]:
        """The inputs a tick now would find stale (older than max_age_s, or never received): camera names, "robot state"."""
        now = self.clock() if now is None else now
        stale = [n for n, x in self._images.items() if now - x.received > self.config.max_age_s]
        if now - self._state.received > self.config.max_age_s:
            stale.append("robot state")
        return stale

    @property
    def steps(self) -> int:
        """Steps recorded in the episode being recorded (0 when not recording)."""
        return len(self._rec) if self.state == "recording" and self._rec is not None else 0

    # ------------------------------------------------------------------ internals
    def _prompt_text(self) -> str:
        want = self.tally.requested()
        if want is None:
            return f"targets reached ({self.tally.line()})"
        how = "do the task cleanly" if want == "success" else "do it almost right and miss by a small margin (1-2 cm off)"
        return f"next: {want.upper().replace('_', '-')} - {how}; press start when the scene is reset [{self.tally.line()}]"

    def _prompt(self) -> None:
        self.on_prompt(self._prompt_text())

    def _begin(self) -> None:
        c = self.config
        self._rec = EpisodeRecorder(c.task, c.hz, rig=c.rig, source="teleop")
        self._requested = self.tally.requested()
        self._stale, self._end_reason, self._last_index = 0, "", {}
        self._action = _Latest()  # an action from before the start must not be replayed into this episode
        self.state = "recording"

    def _end(self, reason: str) -> None:
        self._end_reason = reason
        if self._rec is None or not len(self._rec):
            self._rec, self.state = None, "idle"
            return
        self._pending = self._rec.finish("unlabeled", info={"end_reason": reason, "sans": {"requested": self._requested}})
        self._rec, self.state = None, "awaiting_label"

    def _save(self, label: str) -> None:
        ep = self._pending
        ep.outcome = label
        ep.info["sans"]["label"] = label
        ep.validate()
        self.sink(ep)
        self.tally.counts[label] += 1
        self._pending, self.state = None, "idle"
        self._prompt()

    def flush(self) -> Episode | None:
        """Shutdown: an episode still recording or waiting for its label is saved as "unlabeled" (never lost)."""
        if self.state == "recording":
            self._end("shutdown")
        if self.state == "awaiting_label" and self._pending is not None:
            ep = self._pending
            self.sink(ep)
            self.tally.counts["unlabeled"] += 1
            self._pending, self.state = None, "idle"
            return ep
        return None
