"""Gamepad teleop: a pure mapper from (axes, buttons) arrays - the shape of a ROS ``sensor_msgs/Joy`` - to
`TeleopCommand`, fed either by Linux evdev (`GamepadDevice`) or by ``/joy`` messages (the teleop node).

The YAML button map (``teleop/conf/gamepad.yaml``, LeRobot's layout by default) names, per device axis
(x y z roll pitch yaw), a Joy axis index and sign; a deadman button (held = the arm may move); gripper
buttons; and event buttons (fired on the press edge, so holding a button gives one event).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import numpy as np
import yaml

from teleop.command import EpisodeEvent, TeleopCommand
from teleop.device import ThreadedDevice

log = logging.getLogger(__name__)
AXES = ("x", "y", "z", "roll", "pitch", "yaw")


@dataclass(frozen=True)
class GamepadMap:
    axes: dict[str, tuple[int, float]]  # device axis -> (Joy axis index, sign)
    deadman: int | None  # button index held to enable motion (None: always enabled)
    gripper_close: int | None  # button: close while held
    gripper_toggle: int | None
    events: dict[int, EpisodeEvent]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "gamepad map") -> "GamepadMap":
        valid = {"axes", "deadman", "gripper_close", "gripper_toggle", "events"}
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        axes = {}
        for name, v in (d.get("axes") or {}).items():
            if name not in AXES or not (isinstance(v, (list, tuple)) and len(v) == 2 and int(v[0]) >= 0 and v[1] in (-1, 1)):
                raise ValueError(f"{source}: axes.{name}: expected {AXES} -> [joy axis index, +1|-1], got {v!r}")
            axes[name] = (int(v[0]), float(v[1]))
        events = {}
        for b, ev in (d.get("events") or {}).items():
            try:
                events[int(b)] = EpisodeEvent(ev)
            except ValueError as e:
                raise ValueError(f"{source}: events.{b}: {ev!r} is not one of {[e.value for e in EpisodeEvent]}") from e
        opt = {k: (None if d.get(k) is None else int(d[k])) for k in ("deadman", "gripper_close", "gripper_toggle")}
        return cls(axes=axes, events=events, **opt)

    @classmethod
    def load(cls, path: str | None = None) -> "GamepadMap":
        text = open(path).read() if path else resources.files("teleop").joinpath("conf/gamepad.yaml").read_text()
        return cls.from_dict(yaml.safe_load(text) or {}, source=path or "teleop/conf/gamepad.yaml")


class GamepadMapper:
    """Stateful (press edges, gripper toggle): ``update(axes, buttons, stamp) -> TeleopCommand``."""

    def __init__(self, gmap: GamepadMap) -> None:
        self.map = gmap
        self._prev: Sequence[int] = ()
        self._grip = 1.0

    def update(self, axes: Sequence[float], buttons: Sequence[int], stamp: float | None = None) -> TeleopCommand:
        m = self.map
        axes = np.asarray(axes, dtype=np.float32)
        buttons = [int(b) for b in buttons]
        pressed = lambda i: i is not None and i < len(buttons) and buttons[i] != 0  # noqa: E731
        edge = lambda i: pressed(i) and not (i < len(self._prev) and self._prev[i] != 0)  # noqa: E731
        twist = np.zeros(6, np.float32)
        for name, (idx, sign) in m.axes.items():
            if idx < len(axes):
                twist[AXES.index(name)] = sign * float(axes[idx])
        if edge(m.gripper_toggle):
            self._grip = -self._grip
        gripper = -1.0 if pressed(m.gripper_close) else self._grip
        event = next((ev for b, ev in m.events.items() if edge(b)), None)
        self._prev = buttons
        enabled = True if m.deadman is None else pressed(m.deadman)
        return TeleopCommand(twist=twist, gripper=gripper, enabled=enabled, event=event, stamp=stamp)


class GamepadDevice(ThreadedDevice):
    """A Linux gamepad through evdev (``[teleop]`` extra). Axes are normalised with the device's absinfo and
    ordered like ROS joy's: left x, left y, left trigger, right x, right y, right trigger, hat x, hat y;
    buttons: south, east, north, west, TL, TR, select, start, mode, thumb L, thumb R."""

    _ABS = ("ABS_X", "ABS_Y", "ABS_Z", "ABS_RX", "ABS_RY", "ABS_RZ", "ABS_HAT0X", "ABS_HAT0Y")
    _BTN = ("BTN_SOUTH", "BTN_EAST", "BTN_NORTH", "BTN_WEST", "BTN_TL", "BTN_TR", "BTN_SELECT", "BTN_START", "BTN_MODE", "BTN_THUMBL", "BTN_THUMBR")

    def __init__(self, gmap: GamepadMap | None = None, path: str | None = None, name: str = "gamepad") -> None:
        super().__init__(name)
        self.mapper = GamepadMapper(gmap or GamepadMap.load())
        self.path = path
        self._dev: Any = None
        self._axes = np.zeros(6, np.float32)
        self._joy_axes = [0.0] * len(self._ABS)
        self._joy_buttons = [0] * len(self._BTN)

    def _open(self) -> None:
        try:
            import evdev
        except ImportError as e:
            raise ImportError(f"the gamepad needs evdev (Linux): pip install 'world-vla-loop[teleop]' ({e})") from e
        paths = [self.path] if self.path else evdev.list_devices()
        for p in paths:
            dev = evdev.InputDevice(p)
            caps = dev.capabilities()
            if evdev.ecodes.EV_ABS in caps and evdev.ecodes.EV_KEY in caps:
                self._dev, self._ev = dev, evdev
                log.info("gamepad %s at %s", dev.name, p)
                return
        raise ConnectionError("no gamepad found among /dev/input/event* (permissions: add the user to the 'input' group)")

    def _close(self) -> None:
        if self._dev is not None:
            self._dev.close()

    def _poll(self, timeout_s: float) -> None:
        import select

        ev = self._ev
        r, _, _ = select.select([self._dev.fd], [], [], timeout_s)
        if not r:
            return
        for e in self._dev.read():  # OSError(ENODEV) when unplugged
            if e.type == ev.ecodes.EV_ABS:
                name = ev.ecodes.ABS.get(e.code)
                if name in self._ABS:
                    info = self._dev.absinfo(e.code)
                    mid, half = (info.max + info.min) / 2, max((info.max - info.min) / 2, 1)
                    self._joy_axes[self._ABS.index(name)] = -(e.value - mid) / half  # joy: left/up positive
            elif e.type == ev.ecodes.EV_KEY:
                names = ev.ecodes.BTN.get(e.code, ())
                names = names if isinstance(names, (list, tuple)) else (names,)
                for n in names:
                    if n in self._BTN:
                        self._joy_buttons[self._BTN.index(n)] = int(e.value != 0)
        cmd = self.mapper.update(self._joy_axes, self._joy_buttons)
        self._set_axes(cmd.twist)
        self._set_gripper(cmd.gripper)
        self._set_enabled(cmd.enabled)
        if cmd.event is not None:
            self._push_event(cmd.event)
