"""Devices without a person: a script of commands (tests, demos) and a scripted *operator* for the
simulated robot that teleoperates like a person would - it pushes the virtual stick towards the scripted
expert's targets, and labels each episode by what it saw (it reads the simulator's success flag the way a
person reads the scene). Told "the next one should be a near-success" (`on_prompt`), it aims slightly off.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from robot.arms.base import ArmLimits
from teleop.command import EpisodeEvent, TeleopCommand
from teleop.device import TeleopDevice
from teleop.mapping import TeleopMapping

log = logging.getLogger(__name__)


class ScriptedDevice(TeleopDevice):
    """Plays ``script`` (a list of commands, or a function step -> command), one per `read`; after the end
    it reads as a device at rest. ``disconnect_after``: vanish after that many reads (a USB drop)."""

    def __init__(self, script: Sequence[TeleopCommand] | Callable[[int], TeleopCommand], name: str = "scripted",
                 disconnect_after: int | None = None) -> None:
        self.name, self.script, self.disconnect_after = name, script, disconnect_after
        self.reads = 0
        self._connected = False

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected and (self.disconnect_after is None or self.reads < self.disconnect_after)

    def read(self) -> TeleopCommand:
        if not self.is_connected:
            return TeleopCommand(enabled=False)
        i = self.reads
        self.reads += 1
        if callable(self.script):
            return self.script(i)
        return self.script[i] if i < len(self.script) else TeleopCommand()


class CompositeDevice(TeleopDevice):
    """Motion (twist, gripper, deadman) from one device, episode events from it and from others - e.g. a
    two-button SpaceMouse for motion and the keyboard for the SANS labels."""

    def __init__(self, motion: TeleopDevice, *event_devices: TeleopDevice) -> None:
        self.motion, self.others = motion, list(event_devices)
        self.name = "+".join([motion.name] + [d.name for d in self.others])

    def connect(self) -> None:
        for d in (self.motion, *self.others):
            if not d.is_connected:
                d.connect()

    def disconnect(self) -> None:
        for d in (self.motion, *self.others):
            if d.is_connected:
                d.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.motion.is_connected and all(d.is_connected for d in self.others)

    def read(self) -> TeleopCommand:
        cmd = self.motion.read()
        if cmd.event is None:
            for d in self.others:
                ev = d.read().event
                if ev is not None:
                    return TeleopCommand(cmd.twist, cmd.gripper, cmd.enabled, ev, cmd.stamp)
        return cmd

    def on_prompt(self, requested: str) -> None:
        for d in (self.motion, *self.others):
            if hasattr(d, "on_prompt"):
                d.on_prompt(requested)

    def on_episode_start(self) -> None:
        for d in (self.motion, *self.others):
            if hasattr(d, "on_episode_start"):
                d.on_episode_start()

    def start_now(self) -> None:
        for d in (self.motion, *self.others):
            if hasattr(d, "start_now"):
                d.start_now()

    def label_now(self, success: bool | None = None) -> None:
        for d in (self.motion, *self.others):
            if hasattr(d, "label_now"):
                d.label_now(success)


class ExpertOperator(TeleopDevice):
    """A scripted operator for the ManiSkill robot (``robot.sim.maniskill.ManiSkillSim``).

    Each episode it plans with the privileged object poses (`robot.sim.expert.ScriptedExpert`), aiming off
    by a sampled near-success perturbation when the session asked for a near-success, and converts the
    expert's actions into stick deflections through the same `TeleopMapping` a person's device goes
    through. Asked to start (``start_now()``, the session waits for start before every episode) it presses
    start on its next reading. The first reading of an episode is a hand at rest (zero deflection). When the
    plan is done (or ``label_now()`` is called), it presses the label key matching what happened: success if
    the simulator says so, near_success if it was aiming off, failure otherwise.
    """

    name = "operator"

    def __init__(self, sim, mapping: TeleopMapping, hz: float, limits: ArmLimits, seed: int = 0,
                 near_success_kinds: Sequence[str] = ("place_offset", "grasp_offset")) -> None:
        from robot.sim.expert import ScriptedExpert, sample_perturbation  # noqa: F401 (fails early if absent)

        self.sim, self.mapping, self.hz, self.limits = sim, mapping, hz, limits
        self.rng = np.random.default_rng(seed)
        self.kinds = tuple(near_success_kinds)
        self.requested = "success"
        self.expert = None
        self.perturbation = None
        self._step = 0
        self._labelled = False
        self._label_asked = False
        self._seen_success: bool | None = None
        self._start_asked = False
        self._connected = False

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def start_now(self) -> None:
        """The session waits for start (the scene is reset): press it on the next read."""
        self._start_asked = True

    def on_prompt(self, requested: str) -> None:
        self.requested = requested

    def on_episode_start(self) -> None:
        from robot.sim.expert import ScriptedExpert, sample_perturbation

        kind = "none" if self.requested != "near_success" else str(self.rng.choice(self.kinds))
        self.perturbation = sample_perturbation(kind, self.rng)
        self.expert = ScriptedExpert(self.sim.config.task, self.perturbation, max_translation_m=self.limits.max_translation_m)
        self.expert.plan(self.sim.privileged())
        self._step, self._labelled, self._label_asked = 0, False, False

    def label_now(self, success: bool | None = None) -> None:
        """The session asks for a label (the episode ended): press it on the next read. ``success``: what the
        episode's end showed (the runner's verdict); the operator labels by it rather than by the flag now, which
        the runner's closing hold step may already have changed (PickCube's flag needs a static robot and flickers)."""
        self._label_asked = True
        self._seen_success = success

    def _label(self) -> EpisodeEvent:
        seen = self._seen_success if self._label_asked and self._seen_success is not None else self.sim.success
        if seen:
            return EpisodeEvent.SUCCESS
        return EpisodeEvent.NEAR_SUCCESS if self.perturbation is not None and self.perturbation.kind != "none" else EpisodeEvent.FAILURE

    def read(self) -> TeleopCommand:
        if self._start_asked:
            self._start_asked = False
            return TeleopCommand(event=EpisodeEvent.START)
        if self.expert is None:
            return TeleopCommand()
        self._step += 1
        if self._step == 1:
            return TeleopCommand(gripper=1.0)  # hand at rest when the episode starts
        if (self.expert.done or self._label_asked) and not self._labelled:
            self._labelled = True
            return TeleopCommand(gripper=None, event=self._label())
        action = self.expert.act(self.sim.privileged())
        return TeleopCommand(twist=self.mapping.deflection_for_action(action, self.hz, self.limits), gripper=float(action[6]))

    @property
    def description(self) -> dict:
        return {} if self.perturbation is None else self.perturbation.describe()


def load_script(path: str) -> list[TeleopCommand]:
    """A device script from YAML: a list of steps ``{repeat: n, twist: [6 values in -1..1], gripper: -1|1|null,
    enabled: bool, event: name}`` (every key optional; ``repeat`` 1), expanded to one `TeleopCommand` per read.
    What the teleop node's ``device: scripted`` plays (tests, demos without a person)."""
    import yaml

    from teleop.command import parse_event

    with open(path) as f:
        steps = yaml.safe_load(f) or []
    if not isinstance(steps, list):
        raise ValueError(f"{path}: a teleop script is a YAML list of steps, got {type(steps).__name__}")
    out: list[TeleopCommand] = []
    for i, st in enumerate(steps):
        st = dict(st or {})
        unknown = set(st) - {"repeat", "twist", "gripper", "enabled", "event"}
        if unknown:
            raise ValueError(f"{path}: step {i}: unknown keys {sorted(unknown)}; valid: enabled, event, gripper, repeat, twist")
        twist = np.asarray(st.get("twist", [0.0] * 6), np.float32)
        if twist.shape != (6,) or not np.all(np.abs(twist) <= 1.0):
            raise ValueError(f"{path}: step {i}: twist must be 6 values in [-1, 1], got {st.get('twist')}")
        cmd = TeleopCommand(twist=twist, gripper=st.get("gripper"), enabled=bool(st.get("enabled", True)),
                            event=parse_event(st.get("event")))
        repeat = int(st.get("repeat", 1))
        if repeat < 1:
            raise ValueError(f"{path}: step {i}: repeat must be >= 1")
        out.extend([cmd] * repeat)
    return out
