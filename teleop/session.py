"""The SANS collection session: teleoperated success and near-success demonstrations, labelled live.

Protocol (the paper's SANS data: success and near-success about 1:1):

1. The session picks what the next demonstration should be - whichever of success / near-success is
   behind its target - and says so. For a near-success the operator is told to do the task *almost*
   right and miss by a small margin (grasp 1-2 cm off the object, or put it down just outside the goal).
2. The scene is reset (``reset_scene(i)``: the simulator reseeds; on a real rig the operator resets the
   scene), then the session waits for the operator's *start* (keyboard ``g``, or the device's *next* button:
   ``save_next``); only then does the episode run through `robot.runner.EpisodeRunner` (safety filter,
   fixed rate). ``stop`` while waiting ends the session; a device without a person (the scripted operator)
   presses start itself when asked (``start_now()``).
3. The episode ends on a label key (success / near-success / failure), save-next, stop, max steps,
   success (simulated robot) or a device failure. Without a label yet, the session prompts for one.
   ``rerecord`` discards the episode and the same demonstration is asked for again.
4. The labelled episode goes to the sink (the robot's outbox); counts per outcome are shown after every
   episode. A label timeout, or a lost teleop device, saves the episode as "unlabeled" - never dropped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from robot.collector import SansTally
from robot.console import console
from robot.runner import DEVICE_ENDS, EpisodeRunner
from robot.sinks import EpisodeSink
from teleop.command import LABEL_EVENTS, EpisodeEvent
from teleop.device import TeleopDevice
from teleop.mapping import TeleopMapping
from teleop.source import TeleopSource

log = logging.getLogger(__name__)

PROMPTS = {
    "success": "demonstrate a SUCCESS: do the task cleanly",
    "near_success": "demonstrate a NEAR-SUCCESS: do the task almost right and miss by a small margin "
                    "(grasp 1-2 cm off the object, or place it just outside the goal)",
}


@dataclass(frozen=True)
class SessionConfig:
    success: int = 10  # episodes labelled success to collect
    near_success: int = 10  # episodes labelled near_success to collect (1:1 by default, as the paper)
    max_attempts: int = 100  # episodes run in total (kept + discarded + other labels) before giving up
    label_timeout_s: float = 60.0  # waiting for the operator's label key; then saved as "unlabeled"
    start_timeout_s: float = 600.0  # waiting for the operator's start key before an episode; then the session ends
    operator_note: str = ""

    def __post_init__(self) -> None:
        if self.success < 0 or self.near_success < 0 or self.success + self.near_success < 1:
            raise ValueError(f"session.success/near_success: need non-negative targets with at least one episode, got {self.success}/{self.near_success}")
        if self.max_attempts < 1:
            raise ValueError(f"session.max_attempts: must be >= 1, got {self.max_attempts}")
        if self.label_timeout_s <= 0:
            raise ValueError(f"session.label_timeout_s: must be > 0, got {self.label_timeout_s}")
        if not self.start_timeout_s > 0:
            raise ValueError(f"session.start_timeout_s: must be > 0, got {self.start_timeout_s}")


@dataclass
class SessionSummary:
    counts: Counter = field(default_factory=Counter)  # outcome -> episodes saved
    discarded: int = 0
    attempts: int = 0
    saved: list[str] = field(default_factory=list)  # episode uuids in the order they went to the sink
    stop_reason: str = ""

    def ratio(self) -> float:
        return self.counts["success"] / max(self.counts["near_success"], 1)


class SansSession:
    def __init__(self, runner: EpisodeRunner, device: TeleopDevice, mapping: TeleopMapping, sink: EpisodeSink,
                 config: SessionConfig, instruction: str, reset_scene: Callable[[int], None],
                 success: Callable[[], bool] | None = None, realtime: bool = True) -> None:
        self.runner, self.device, self.mapping, self.sink = runner, device, mapping, sink
        self.config, self.instruction, self.reset_scene, self.success = config, instruction, reset_scene, success
        self.source = TeleopSource(device, mapping, runner.config.hz, runner.arm.limits, realtime=realtime)
        self.summary = SessionSummary()
        self.tally = SansTally(config.success, config.near_success)
        self.tally.counts = self.summary.counts  # one set of counts, shown live and returned

    # ------------------------------------------------------------------ protocol
    def requested(self) -> str | None:
        """The outcome the next demonstration should have (None: both targets reached); the ratio is kept on
        target as the session goes, so a session cut short is still balanced."""
        return self.tally.requested()

    def _show_counts(self) -> None:
        n, c = self.summary.counts, self.config
        console.print(
            f"[bold]SANS[/] success {n['success']}/{c.success}  near_success {n['near_success']}/{c.near_success}  "
            f"failure {n['failure']}  unlabeled {n['unlabeled']}  discarded {self.summary.discarded}  "
            f"(success:near = {n['success']}:{n['near_success']})"
        )

    def _wait_label(self, success: bool | None = None) -> EpisodeEvent | None:
        """Poll the device for a label (or rerecord); None after the timeout. ``success``: the runner's verdict on
        the episode's end, passed to a simulated operator (a person sees the scene instead)."""
        console.print("[bold yellow]label this episode[/]: success / near_success / failure, or rerecord to discard")
        if hasattr(self.device, "label_now"):
            self.device.label_now(success)
        deadline = time.monotonic() + self.config.label_timeout_s
        while time.monotonic() < deadline and self.device.is_connected:
            ev = self.device.read().event
            if ev in LABEL_EVENTS or ev == EpisodeEvent.RERECORD:
                return ev
            if ev is not None:
                console.print(f"  ({ev.value} ignored: waiting for a label)")
            time.sleep(0.02)
        return None

    def _wait_start(self) -> str:
        """Poll the device until the operator starts the episode: "start" (start or save_next), "stop", "lost"
        (the device disconnected) or "timeout"."""
        console.print("[bold green]reset the scene, then press START to record[/] (keyboard g or n, SpaceMouse right "
                      "button, gamepad start; stop ends the session)")
        if hasattr(self.device, "start_now"):
            self.device.start_now()
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if not self.device.is_connected:
                return "lost"
            ev = self.device.read().event
            if ev in (EpisodeEvent.START, EpisodeEvent.SAVE_NEXT):
                return "start"
            if ev == EpisodeEvent.STOP:
                return "stop"
            if ev == EpisodeEvent.ESTOP:
                self.runner.safety.estop("operator e-stop while waiting to start")
            elif ev is not None:
                console.print(f"  ({ev.value} ignored: waiting for start)")
            time.sleep(0.02)
        return "timeout"

    # ------------------------------------------------------------------ main loop
    def run(self) -> SessionSummary:
        s, c = self.summary, self.config
        if not self.device.is_connected:
            self.device.connect()
        while True:
            want = self.requested()
            if want is None:
                s.stop_reason = "targets reached"
                break
            if s.attempts >= c.max_attempts:
                s.stop_reason = f"max_attempts ({c.max_attempts}) reached"
                break
            s.attempts += 1
            console.rule(f"episode {s.attempts}: {PROMPTS[want]}")
            if hasattr(self.device, "on_prompt"):
                self.device.on_prompt(want)
            self.reset_scene(s.attempts - 1)
            started = self._wait_start()
            if started != "start":
                s.attempts -= 1  # nothing was recorded
                s.stop_reason = {"stop": "operator stopped the session", "lost": "teleop device lost while waiting for start",
                                 "timeout": f"no start within session.start_timeout_s ({c.start_timeout_s:g} s)"}[started]
                break
            result = self.runner.run(self.source, self.instruction, success=self.success,
                                     info={"sans": {"requested": want}}, operator_note=c.operator_note)
            if result.episode is None:
                s.stop_reason = f"no episode could be recorded ({result.end_reason}: {result.detail})"
                break
            ep = result.episode
            ev = parse_label(result.event)
            stop_after = result.event == EpisodeEvent.STOP.value or result.end_reason in DEVICE_ENDS
            if ev is None and result.end_reason != "teleop_lost":
                ev = self._wait_label(result.success)
            if ev == EpisodeEvent.RERECORD:
                s.discarded += 1
                console.print(f"  discarded ({len(ep)} steps); recording it again")
                if stop_after:
                    s.stop_reason = result.end_reason
                    break
                continue
            label = ev.value if ev is not None else "unlabeled"
            ep.outcome = label
            ep.info["sans"] = {"requested": want, "label": label, "end_reason": ep.info.get("end_reason"),
                               "sim_success": result.success, **getattr(self.device, "description", {})}
            ep.validate()
            self.sink(ep)
            s.counts[label] += 1
            s.saved.append(ep.uuid)
            console.print(f"  saved {ep.uuid[:8]} as [bold]{label}[/] ({len(ep)} steps, ended by {result.end_reason})")
            self._show_counts()
            if stop_after:
                s.stop_reason = "operator stopped the session" if result.event == "stop" else f"{result.end_reason}: {result.detail}"
                break
        console.print(f"[bold]session over[/]: {s.stop_reason}")
        self._show_counts()
        return s


def parse_label(event: str | None) -> EpisodeEvent | None:
    """The runner's end event as a label (or rerecord); save_next/stop/None need a label prompt."""
    if event is None:
        return None
    ev = EpisodeEvent(event)
    return ev if ev in LABEL_EVENTS or ev == EpisodeEvent.RERECORD else None
