"""Keyboard teleop from a terminal: works over SSH, no display, no pynput.

The terminal is put in cbreak mode and read by a thread; escape sequences (arrows) are decoded by
`KeyDecoder`. Terminals report key presses, never releases, so a motion key moves the arm for ``hold_s``
after its last press (key autorepeat re-arms it while the key is held). The key map is YAML
(``teleop/conf/keyboard.yaml``): motion keys -> (axis, sign), gripper keys, event keys.
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import yaml

from teleop.command import EpisodeEvent
from teleop.device import ThreadedDevice

AXES = ("x", "y", "z", "roll", "pitch", "yaw")
_ESCAPES = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[C": "right", b"\x1b[D": "left",
            b"\x1bOA": "up", b"\x1bOB": "down", b"\x1bOC": "right", b"\x1bOD": "left"}
_SINGLE = {b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace", b" ": "space", b"\t": "tab", b"\x1b": "esc"}


class KeyDecoder:
    """Bytes from a terminal -> key names ('a', 'enter', 'space', 'left', 'esc', ...). Keeps a partial
    escape sequence between calls; a lone ESC is reported when no sequence follows within the same read."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        buf, keys = self._buf + data, []
        while buf:
            if buf.startswith(b"\x1b"):
                if len(buf) >= 3 and buf[:3] in _ESCAPES:
                    keys.append(_ESCAPES[buf[:3]])
                    buf = buf[3:]
                    continue
                if len(buf) < 3 and buf in (b"\x1b[", b"\x1bO"):
                    break  # an incomplete sequence: wait for the rest
                keys.append("esc")
                buf = buf[1:]
                continue
            ch = buf[:1]
            keys.append(_SINGLE.get(ch) or ch.decode("latin-1").lower())
            buf = buf[1:]
        self._buf = buf
        return keys


@dataclass(frozen=True)
class KeyMap:
    motion: dict[str, tuple[str, float]] = field(default_factory=dict)
    gripper: dict[str, str] = field(default_factory=dict)  # key -> open | close | toggle
    events: dict[str, EpisodeEvent] = field(default_factory=dict)
    hold_s: float = 0.15

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "keymap") -> "KeyMap":
        unknown = set(d) - {"motion", "gripper", "events", "hold_s"}
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; valid keys: ['events', 'gripper', 'hold_s', 'motion']")
        motion = {}
        for k, v in (d.get("motion") or {}).items():
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and v[0] in AXES and v[1] in (-1, 1)):
                raise ValueError(f"{source}: motion.{k}: expected [axis, +1|-1] with axis in {AXES}, got {v!r}")
            motion[str(k)] = (v[0], float(v[1]))
        gripper = {}
        for k, v in (d.get("gripper") or {}).items():
            if v not in ("open", "close", "toggle"):
                raise ValueError(f"{source}: gripper.{k}: expected open|close|toggle, got {v!r}")
            gripper[str(k)] = v
        events = {}
        for k, v in (d.get("events") or {}).items():
            try:
                events[str(k)] = EpisodeEvent(v)
            except ValueError as e:
                raise ValueError(f"{source}: events.{k}: {v!r} is not one of {[e.value for e in EpisodeEvent]}") from e
        clash = (set(motion) & set(events)) | (set(motion) & set(gripper)) | (set(gripper) & set(events))
        if clash:
            raise ValueError(f"{source}: keys bound twice: {sorted(clash)}")
        hold = float(d.get("hold_s", 0.15))
        if not 0 < hold <= 2:
            raise ValueError(f"{source}: hold_s must be in (0, 2] s, got {hold}")
        return cls(motion, gripper, events, hold)

    @classmethod
    def load(cls, path: str | None = None) -> "KeyMap":
        text = open(path).read() if path else resources.files("teleop").joinpath("conf/keyboard.yaml").read_text()
        return cls.from_dict(yaml.safe_load(text) or {}, source=path or "teleop/conf/keyboard.yaml")

    def help_lines(self) -> list[str]:
        by_axis: dict[str, list[str]] = {}
        for k, (axis, sign) in self.motion.items():
            by_axis.setdefault(axis, []).append(f"{k}({'+' if sign > 0 else '-'})")
        lines = ["move: " + "  ".join(f"{a} {'/'.join(ks)}" for a, ks in by_axis.items())]
        lines.append("gripper: " + "  ".join(f"{k}={v}" for k, v in self.gripper.items()))
        lines.append("events: " + "  ".join(f"{k}={v.value}" for k, v in self.events.items()))
        return lines


class KeyboardDevice(ThreadedDevice):
    """``fd``: a terminal file descriptor (default: stdin). Refuses a non-terminal with a clear error."""

    def __init__(self, keymap: KeyMap | None = None, fd: int | None = None, name: str = "keyboard") -> None:
        super().__init__(name)
        self.keymap = keymap or KeyMap.load()
        self._fd = fd
        self._decoder = KeyDecoder()
        self._held: dict[str, float] = {}  # motion key -> time it stops acting
        self._grip = 1.0
        self._saved_tty: Any = None

    def _open(self) -> None:
        fd = sys.stdin.fileno() if self._fd is None else self._fd
        if not os.isatty(fd):
            raise ConnectionError("keyboard teleop needs a terminal (stdin is not a TTY); run it in a terminal or ssh -t, or use device=scripted")
        import termios
        import tty

        self._fd = fd
        self._saved_tty = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # keys arrive one by one, no echo; Ctrl-C still interrupts

    def _close(self) -> None:
        if self._saved_tty is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None

    def handle_keys(self, keys: list[str], now: float) -> None:
        km = self.keymap
        for k in keys:
            if k in km.motion:
                self._held[k] = now + km.hold_s
            elif k in km.gripper:
                act = km.gripper[k]
                self._grip = 1.0 if act == "open" else -1.0 if act == "close" else -self._grip
                self._set_gripper(self._grip)
            elif k in km.events:
                self._push_event(km.events[k])
        axes = np.zeros(6, np.float32)
        for k, until in list(self._held.items()):
            if until < now:
                del self._held[k]
                continue
            axis, sign = km.motion[k]
            axes[AXES.index(axis)] += sign
        self._set_axes(np.clip(axes, -1, 1))

    def _poll(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        keys: list[str] = []
        if ready:
            data = os.read(self._fd, 64)
            if not data:
                raise ConnectionError("terminal closed (EOF on the keyboard)")
            keys = self._decoder.feed(data)
        self.handle_keys(keys, time.monotonic())
