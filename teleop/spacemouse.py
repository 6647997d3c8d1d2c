"""3Dconnexion SpaceMouse from raw HID reports (hidapi), parsed here so tests feed synthetic reports.

Report layouts (as in pyspacemouse's ``devices.toml`` and robosuite's reader): little-endian int16 axis
values scaled by 1/350 to about [-1, 1]. Older and compact models send translation in report 1 and
rotation in report 2 ("split"); Pro/Enterprise models send all six in report 1 ("single"). Report 3
carries the buttons as bits. Axis order out: x, y, z, roll, pitch, yaw (device frame, signs as in
pyspacemouse's legacy convention). Button roles come from ``teleop/conf/spacemouse.yaml``.

The physical device is opened with hidapi's ``hid.device()`` (``[teleop]`` extra; Linux needs a udev rule
for ``/dev/hidraw*``). A read error means the device was unplugged: the device reports it and stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import numpy as np
import yaml

from teleop.command import EpisodeEvent
from teleop.device import ThreadedDevice

log = logging.getLogger(__name__)

AXIS_SCALE = 350.0


@dataclass(frozen=True)
class SpaceMouseSpec:
    name: str
    vendor_id: int
    product_id: int
    # axis -> (report id, low byte index, sign); order x, y, z, roll, pitch, yaw
    axes: tuple[tuple[int, int, int], ...]
    buttons: dict[str, tuple[int, int, int]]  # name -> (report id, byte, bit)


_SPLIT = ((1, 1, 1), (1, 3, -1), (1, 5, -1), (2, 3, -1), (2, 1, -1), (2, 5, 1))
_SINGLE = ((1, 1, 1), (1, 3, -1), (1, 5, -1), (1, 9, -1), (1, 7, -1), (1, 11, 1))
_TWO = {"LEFT": (3, 1, 0), "RIGHT": (3, 1, 1)}
SPECS: dict[str, SpaceMouseSpec] = {s.name: s for s in (
    SpaceMouseSpec("SpaceNavigator", 0x046D, 0xC626, _SPLIT, _TWO),
    SpaceMouseSpec("SpaceMouseCompact", 0x256F, 0xC635, _SPLIT, _TWO),
    SpaceMouseSpec("SpaceMouseWireless", 0x256F, 0xC62E, _SPLIT, _TWO),
    SpaceMouseSpec("SpaceMouseWirelessReceiver", 0x256F, 0xC652, _SPLIT, _TWO),
    SpaceMouseSpec("SpaceMouseProWireless", 0x256F, 0xC632, _SINGLE,
                   {"MENU": (3, 1, 0), "FIT": (3, 1, 1), "BTN_1": (3, 2, 4), "BTN_2": (3, 2, 5), "BTN_3": (3, 2, 6), "BTN_4": (3, 2, 7), "ESC": (3, 3, 6)}),
    SpaceMouseSpec("SpaceMouseEnterprise", 0x256F, 0xC633, _SINGLE,
                   {"MENU": (3, 1, 0), "FIT": (3, 1, 1), "BTN_1": (3, 2, 4), "BTN_2": (3, 2, 5), "BTN_3": (3, 2, 6), "BTN_4": (3, 2, 7), "ESC": (3, 3, 6)}),
)}


def _int16(lo: int, hi: int) -> int:
    v = lo | (hi << 8)
    return v - 65536 if v >= 32768 else v


class SpaceMouseParser:
    """Pure: ``feed(report)`` updates ``axes`` (6,) in ~[-1, 1] and ``buttons`` {name: bool}."""

    def __init__(self, spec: SpaceMouseSpec) -> None:
        self.spec = spec
        self.axes = np.zeros(6, np.float32)
        self.buttons = {n: False for n in spec.buttons}

    def feed(self, report: bytes | list[int]) -> None:
        data = bytes(report)
        if not data:
            return
        rid = data[0]
        for i, (r, lo, sign) in enumerate(self.spec.axes):
            if r == rid and lo + 1 < len(data):
                self.axes[i] = np.clip(sign * _int16(data[lo], data[lo + 1]) / AXIS_SCALE, -1.5, 1.5)
        for n, (r, byte, bit) in self.spec.buttons.items():
            if r == rid and byte < len(data):
                self.buttons[n] = bool(data[byte] >> bit & 1)


class ReportSource(Protocol):
    """What hidapi's ``hid.device`` offers (and a test fake imitates)."""

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpaceMouseButtons:
    roles: dict[str, str]  # button name -> gripper_toggle | gripper_close_hold | deadman | <event>

    @classmethod
    def load(cls, path: str | None = None) -> "SpaceMouseButtons":
        text = open(path).read() if path else resources.files("teleop").joinpath("conf/spacemouse.yaml").read_text()
        d = yaml.safe_load(text) or {}
        unknown = set(d) - {"buttons"}
        if unknown:
            raise ValueError(f"{path or 'teleop/conf/spacemouse.yaml'}: unknown keys {sorted(unknown)}; valid keys: ['buttons']")
        valid = {"gripper_toggle", "gripper_close_hold", "deadman"} | {e.value for e in EpisodeEvent}
        roles = {}
        for b, role in (d.get("buttons") or {}).items():
            if role not in valid:
                raise ValueError(f"spacemouse buttons.{b}: {role!r} is not one of {sorted(valid)}")
            roles[str(b)] = role
        return cls(roles)


class SpaceMouseDevice(ThreadedDevice):
    """``source``: an open report source (tests); None opens the first known SpaceMouse with hidapi."""

    def __init__(self, buttons: SpaceMouseButtons | None = None, model: str | None = None, source: ReportSource | None = None,
                 name: str = "spacemouse") -> None:
        super().__init__(name)
        if model is not None and model not in SPECS:
            raise ValueError(f"spacemouse model {model!r} is unknown; known: {sorted(SPECS)}")
        self.roles = (buttons or SpaceMouseButtons.load()).roles
        self.model = model
        self._source = source
        self.parser: SpaceMouseParser | None = SpaceMouseParser(SPECS[model]) if model else None
        self._prev = {}
        self._grip = 1.0

    def _open(self) -> None:
        if self._source is not None:
            if self.parser is None:
                self.parser = SpaceMouseParser(SPECS["SpaceMouseCompact"])
            return
        try:
            import hid
        except ImportError as e:
            raise ImportError(f"the SpaceMouse needs hidapi: pip install 'world-vla-loop[teleop]' ({e})") from e
        present = {(d["vendor_id"], d["product_id"]) for d in hid.enumerate()}
        specs = [SPECS[self.model]] if self.model else list(SPECS.values())
        for spec in specs:
            if (spec.vendor_id, spec.product_id) in present:
                dev = hid.device()
                try:
                    dev.open(spec.vendor_id, spec.product_id)
                except OSError as e:
                    raise ConnectionError(f"SpaceMouse {spec.name}: cannot open it ({e}); on Linux add a udev rule for /dev/hidraw*") from e
                self._source, self.parser = dev, SpaceMouseParser(spec)
                log.info("SpaceMouse %s opened", spec.name)
                return
        raise ConnectionError(f"no SpaceMouse found (known models: {sorted(SPECS)}); is it plugged in?")

    def _close(self) -> None:
        if self._source is not None:
            self._source.close()

    def _poll(self, timeout_s: float) -> None:
        data = self._source.read(64, int(timeout_s * 1000))  # OSError when unplugged
        if not data:
            return
        p = self.parser
        p.feed(data)
        self._set_axes(np.clip(p.axes, -1, 1))
        for b, pressed in p.buttons.items():
            role, was = self.roles.get(b), self._prev.get(b, False)
            if role == "gripper_close_hold":
                self._set_gripper(-1.0 if pressed else 1.0)
            elif role == "deadman":
                self._set_enabled(pressed)
            elif pressed and not was and role == "gripper_toggle":
                self._grip = -self._grip
                self._set_gripper(self._grip)
            elif pressed and not was and role is not None:
                self._push_event(EpisodeEvent(role))
            self._prev[b] = pressed
