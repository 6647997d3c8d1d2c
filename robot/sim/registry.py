"""The simulated robots, by the name a `sim` config gives in ``kind``: one place that maps the name to its config and
robot classes (each imported only when asked for: ManiSkill brings torch, LIBERO brings MuJoCo)."""

from __future__ import annotations

from typing import Any, Mapping

SIMULATORS = ("maniskill", "libero")  # the first is the default


def sim_kind(sim_cfg: Mapping[str, Any] | None) -> str:
    """The simulator a `sim` config names (``kind``; absent or null: ManiSkill); an unknown name is refused."""
    kind = (sim_cfg or {}).get("kind") or SIMULATORS[0]
    if kind not in SIMULATORS:
        raise ValueError(f"sim.kind: {kind!r} is not a known simulated robot (available: {', '.join(SIMULATORS)})")
    return kind


def make_sim_robot(sim_cfg: Mapping[str, Any], task: str | int | None = None):
    """The simulated robot (not connected) a `sim` config describes: its ``kind`` picks the simulator, the other keys
    are that simulator's config fields; ``task`` (when given) sets the task (LIBERO: an index in the suite, or the
    task's name)."""
    kind = sim_kind(sim_cfg)
    d = {k: v for k, v in sim_cfg.items() if k != "kind"}
    if task is not None:
        d["task"] = task
    if kind == "libero":
        from robot.sim.libero import LiberoConfig, LiberoRobot

        return LiberoRobot(LiberoConfig.from_dict(d))
    from robot.sim.maniskill import ManiSkillConfig, SimRobot

    return SimRobot(ManiSkillConfig.from_dict(d))
