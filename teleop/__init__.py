"""Teleoperation: devices -> `TeleopCommand` -> 7-d action, and the SANS collection session.

==========  ======================================  ===================================
device      class                                   button / key map
==========  ======================================  ===================================
keyboard    `teleop.keyboard.KeyboardDevice`        teleop/conf/keyboard.yaml
spacemouse  `teleop.spacemouse.SpaceMouseDevice`    teleop/conf/spacemouse.yaml
gamepad     `teleop.gamepad.GamepadDevice`          teleop/conf/gamepad.yaml
scripted    `teleop.scripted.ScriptedDevice` / `ExpertOperator` (simulated robot)
==========  ======================================  ===================================

Nothing here imports torch or `learning` (the robot PC installs light).
"""

from __future__ import annotations

from typing import Any

DEVICE_KINDS = ("keyboard", "spacemouse", "gamepad")


def make_device(kind: str, map_file: str | None = None, **kwargs: Any):
    """A physical teleop device of ``kind``; ``map_file`` overrides the packaged key/button map YAML."""
    if kind == "keyboard":
        from teleop.keyboard import KeyboardDevice, KeyMap

        return KeyboardDevice(KeyMap.load(map_file), **kwargs)
    if kind == "spacemouse":
        from teleop.spacemouse import SpaceMouseButtons, SpaceMouseDevice

        return SpaceMouseDevice(SpaceMouseButtons.load(map_file), **kwargs)
    if kind == "gamepad":
        from teleop.gamepad import GamepadDevice, GamepadMap

        return GamepadDevice(GamepadMap.load(map_file), **kwargs)
    raise ValueError(f"teleop device {kind!r} is unknown; valid: {', '.join(DEVICE_KINDS)} (or 'scripted' in wvl robot)")
