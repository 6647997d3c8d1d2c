"""A rig: what one robot process plays episodes on (an arm, its cameras, the instruction, how to put a scene in front
of it and how to read success), and the robot process's episode loop over it (`wvl robot run`, `wvl robot deploy`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from robot.arms.base import Arm
from robot.cameras.base import Camera
from robot.runner import EpisodeRunner


@dataclass
class Rig:
    arm: Arm
    cameras: dict[str, Camera]
    instruction: str
    # reset_scene(i, stride=1) -> the seed played: episode i's scene (sim: seed + i, replaced by + stride while
    # it is solved at reset, robot.sim.rollout.reset_unsolved; a real rig asks the operator)
    reset_scene: Callable[..., int | None]
    success: Callable[[], bool] | None
    close: Callable[[], None]
    sim: Any = None  # robot.sim.maniskill.ManiSkillSim for the simulated rig


def play_episodes(rig: Rig, runner: EpisodeRunner, source, n: int, first: int = 0, *, meta: dict[str, Any] | None = None,
                  info: dict[str, Any] | None = None, stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, Any]]:
    """The robot process's episode loop (`wvl robot run` and `wvl robot deploy`): episode i of ``n`` resets scene
    ``first + i`` (sim: seed + first + i, a scene solved at reset replaced by + n, as `wvl eval-policy` does:
    robot.sim.rollout) and runs one episode of ``source``. Yields (i, EpisodeResult); stops early when ``stop()``."""
    for i in range(n):
        if stop is not None and stop():
            return
        played = rig.reset_scene(first + i, n)
        ep_info = {**(info or {}), **({"seed": played} if played is not None else {})}
        yield i, runner.run(source, rig.instruction, success=rig.success, info=ep_info, **(meta or {}))
