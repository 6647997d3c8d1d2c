"""Episodes on a simulated robot: the one rollout path of SANS collection, `wvl eval-policy`, `wvl robot` and
`wvl robot deploy` (the loop's robot process).

Every simulated episode is `robot.runner.EpisodeRunner.run` -- the loop a real rig runs -- on the simulated
arm and camera(s), behind the rig's `SafetyFilter`, in simulated time. What differs between the callers is
only the action source (the scripted expert, an ONNX policy through `PolicyRuntime`, a teleop device) and
which seeds they play. So an episode evaluated by `wvl eval-policy` and the same seed run by the loop's robot
process are the same rollout, step for step.

**Success** (the one rule, everywhere): the simulator's own success flag *at the episode's end*. An episode
ends ``settle_steps`` (`RunnerConfig`, default 2) after the flag first rises, or after ``max_steps``; a
policy that reaches the goal and then knocks the cube away has failed. ``reward[t]`` is the flag at
observation t.

**Scenes**: `reset_unsolved` resets to ``seed``; a scene already solved before the arm moves (the goal spawned
at the cube) is replaced by ``seed + stride``, ``seed + 2 * stride``, ... (an evaluation of N episodes uses
stride N, so its replacements never collide with its own seeds). The seed actually played is recorded in
``Episode.info["seed"]``.

**Safety**: the simulated rig's limits are ``robot/conf/robot.yaml``'s ``safety`` block (`sim_safety_config`),
the same file `wvl robot` reads, with the simulator's own workspace box (``config.safety_overrides()``: LIBERO's
scene differs from ManiSkill's table, and its box is in the arm's base frame where ManiSkill's is in the world
frame): SANS demos are recorded through the filter they are later deployed behind.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from robot.runner import ActionSource, EpisodeResult, EpisodeRunner, RunnerConfig
from robot.safety import SafetyConfig, SafetyFilter

log = logging.getLogger(__name__)

ROBOT_CONF = Path(__file__).resolve().parents[1] / "conf" / "robot.yaml"


class SolvedSceneError(RuntimeError):
    """Every replacement seed gave a scene that is already solved at reset."""


def sim_safety_config(overrides: dict[str, Any] | None = None) -> SafetyConfig:
    """The simulated rig's safety limits: ``robot/conf/robot.yaml`` ``safety`` (+ ``overrides``). The block must
    name every `SafetyConfig` key: the dataclass defaults are the real arm's, never the simulated rig's."""
    import yaml

    d = dict((yaml.safe_load(ROBOT_CONF.read_text()) or {}).get("safety") or {})
    missing = sorted({f.name for f in fields(SafetyConfig)} - set(d))
    if missing:
        raise ValueError(f"{ROBOT_CONF} safety: the simulated rig's block must set every key (the dataclass defaults are the "
                         f"real arm's); missing {missing}")
    d.update(overrides or {})
    return SafetyConfig.from_dict(d)


def reset_unsolved(sim: Any, seed: int, stride: int = 1, tries: int = 100) -> int:
    """Reset ``sim`` to the first of seed, seed + stride, ... whose task is not solved at reset; returns it."""
    if stride < 1:
        raise ValueError(f"stride: must be >= 1, got {stride}")
    for k in range(tries):
        s = int(seed) + k * int(stride)
        sim.reset(s)
        if not sim.success:
            return s
    raise SolvedSceneError(f"seed {seed}: {tries} replacement seeds (stride {stride}) were all solved at reset")


def sim_runner(robot: Any, max_steps: int | None = None, *, source_kind: str = "policy", replan_every: int | None = None,
               settle_steps: int | None = None, safety: SafetyConfig | None = None) -> EpisodeRunner:
    """An `EpisodeRunner` on a connected simulated robot (`SimRobot` / `LiberoRobot`), in simulated time."""
    from robot.cameras.group import CameraGroup
    from robot.control import SimulatedClock

    c = robot.config
    steps = max_steps or getattr(c, "max_steps", None) or c.episode_steps
    kw = {} if settle_steps is None else {"settle_steps": settle_steps}
    cfg = RunnerConfig(hz=float(c.control_hz), max_steps=int(steps), replan_every=replan_every, source_kind=source_kind,
                       rig=c.rig, **kw)
    safety = safety or sim_safety_config(c.safety_overrides())
    return EpisodeRunner(robot.arm, CameraGroup(dict(robot.cameras)), SafetyFilter(safety, robot.arm.limits), cfg, SimulatedClock())


def sim_episode_info(robot: Any, seed: int) -> dict[str, Any]:
    """What every simulated episode records about its scene (seed, task, camera framing)."""
    c = robot.config
    info = {"seed": int(seed), "sim_task": getattr(c, "task_name", c.task), "camera": c.camera_info()}
    if hasattr(c, "suite"):
        info["sim_suite"] = c.suite
    if hasattr(c, "workspace_info"):
        info["workspace"] = c.workspace_info()
    return info


def run_sim_episode(runner: EpisodeRunner, robot: Any, source: ActionSource, seed: int, *, stride: int = 1,
                    stop: Callable[[], bool] | None = None, info: dict[str, Any] | None = None,
                    reset: Callable[[int], int] | None = None, **meta: Any) -> EpisodeResult:
    """Reset to an unsolved scene from ``seed`` (or call ``reset(seed) -> seed used``), then run one episode of
    ``source`` through ``runner``, labelled by the simulator's success flag at the end. ``meta``: Episode fields
    (policy_version, loop_iteration)."""
    used = reset(seed) if reset is not None else reset_unsolved(robot.sim, seed, stride)
    ep_info = {**sim_episode_info(robot, used), **(info or {})}
    res = runner.run(source, robot.instruction, success=lambda: bool(robot.sim.success), stop=stop, info=ep_info, **meta)
    if res.episode is not None:
        res.episode.info["sim_success"] = bool(res.success)
    return res
