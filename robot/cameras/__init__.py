"""Cameras: one protocol (`Camera`: connect / read -> `Frame` / disconnect), one file per device, a registry.

=============  ==========================================================  ==========================
kind           class (config)                                              file
=============  ==========================================================  ==========================
realsense      `RealSenseCamera` (`RealSenseConfig`), also plays ``.db3``    realsense.py (pyrealsense2)
replay         `EpisodeReplayCamera` / RealSense playback by file suffix   replay.py
synthetic      `SyntheticCamera` (`SyntheticCameraConfig`): a fake device   fake.py
sim            `robot.sim.maniskill.SimCamera`: built by `SimRobot`         robot/sim
=============  ==========================================================  ==========================

Vendor SDKs are imported when a camera of that kind is made, never at import time.
"""

from __future__ import annotations

from typing import Any

from robot.cameras.base import Camera, Frame

CAMERA_KINDS = ("realsense", "replay", "synthetic")


def make_camera(kind: str, **kwargs: Any) -> Camera:
    """A camera of ``kind`` built from keyword config (unknown keys are refused by the config dataclass)."""
    if kind == "realsense":
        from robot.cameras.realsense import RealSenseCamera, RealSenseConfig

        return RealSenseCamera(_build(RealSenseConfig, kwargs, kind))
    if kind == "synthetic":
        from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig

        return SyntheticCamera(_build(SyntheticCameraConfig, kwargs, kind))
    if kind == "replay":
        from robot.cameras.replay import make_replay_camera

        if "path" not in kwargs:
            raise ValueError("camera kind 'replay': the 'path' key (an .episode or .db3 file) is required")
        return make_replay_camera(**kwargs)
    raise ValueError(f"camera kind {kind!r} is unknown; valid kinds: {', '.join(CAMERA_KINDS)} (the sim camera comes with the sim robot)")


def _build(cls, kwargs: dict[str, Any], kind: str):
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    unknown = set(kwargs) - names
    if unknown:
        raise ValueError(f"camera kind {kind!r}: unknown keys {sorted(unknown)}; valid keys: {sorted(names)}")
    return cls(**kwargs)


__all__ = ["Camera", "Frame", "make_camera", "CAMERA_KINDS"]
