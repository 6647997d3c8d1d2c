"""What every teleop device produces: one `TeleopCommand` per read, and the episode event vocabulary.

Events follow LeRobot's recording controls plus the SANS labels:

==================  =======================================================================
``save_next``       end the episode; label it (if not labelled yet) and go on (LeRobot exit_early)
``rerecord``        discard the episode and record it again (LeRobot rerecord_episode)
``stop``            end the episode, label it, end the session (LeRobot stop_recording)
``success``         end + label: the task was done
``near_success``    end + label: the task was *almost* done (missed by a small margin)
``failure``         end + label: a plain failure
``start``           start recording (sessions that wait for the operator)
``estop``           latch the safety filter's e-stop (released only by the operator, outside the loop)
==================  =======================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class EpisodeEvent(str, enum.Enum):
    SAVE_NEXT = "save_next"
    RERECORD = "rerecord"
    STOP = "stop"
    SUCCESS = "success"
    NEAR_SUCCESS = "near_success"
    FAILURE = "failure"
    START = "start"
    ESTOP = "estop"


LABEL_EVENTS = (EpisodeEvent.SUCCESS, EpisodeEvent.NEAR_SUCCESS, EpisodeEvent.FAILURE)


def parse_event(name: str | None) -> EpisodeEvent | None:
    if name is None:
        return None
    try:
        return EpisodeEvent(name)
    except ValueError as e:
        raise ValueError(f"event {name!r} is unknown; valid events: {[e.value for e in EpisodeEvent]}") from e


@dataclass(frozen=True)
class TeleopCommand:
    """One reading of a device.

    ``twist``: (6,) normalised deflection in [-1, 1] per axis (x, y, z, roll, pitch, yaw) in the *device*
    frame - `teleop.mapping.TeleopMapping` applies deadband, axis remap to the robot base frame and speeds.
    ``gripper``: target in the action convention (-1 close, +1 open) or None (keep the last target).
    ``enabled``: the deadman (False = the arm must hold). ``event``: at most one episode event.
    ``stamp``: monotonic time the device last reported (the safety watchdog's input); None = now.
    """

    twist: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    gripper: float | None = None
    enabled: bool = True
    event: EpisodeEvent | None = None
    stamp: float | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.twist, dtype=np.float32).reshape(-1)
        if t.shape != (6,):
            raise ValueError(f"TeleopCommand.twist: expected 6 values, got shape {t.shape}")
        object.__setattr__(self, "twist", t)
