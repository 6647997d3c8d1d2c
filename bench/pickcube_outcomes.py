"""What PickCube's successes and failures physically are: each stored episode replayed in ManiSkill.

**Outcomes** (first table): for every episode of ``--store``, by its recorded outcome (success / failure), where the
cube ended relative to the goal, how far it moved on the table, and whether it was ever lifted 2 cm (a pick)
before the episode's first success (or its end): what the world model must see to tell them apart.

**Lost successes** (second table): the success rule (`robot/sim/rollout.py`) is the flag at the episode's end, 2 settle steps after it first rises.
For every episode whose flag ever rose, the recorded actions are replayed from its seed (the replay must reproduce the recorded flags: counted) and
ManiSkill's own terms are read at each step: the cube within 2.5 cm of the goal (``is_obj_placed``), the arm still
(``is_robot_static``), the cube held (``is_grasped``), plus the cube's height and distance to the goal from the
privileged state. An episode that lost the flag is put in the first class that fits:

- *lifted away*: the cube was placed while held, the arm then lifted (largest z command after the first success
  > 0.1) and the cube left the goal or the arm stopped being still;
- *arm moved*: the cube stayed placed, the arm did not stay still;
- *cube left*: the cube left the goal without a lift;

    .venv/bin/python bench/pickcube_outcomes.py --store <store> [--task PickCube-v1]

(``--store``: PickCube episodes with simulator seeds, e.g. `wvl eval-policy ... store=` or a SANS store.)

Last line: success_end_to_goal_cm=... failure_end_to_goal_cm=... success_lifted=... failure_lifted=... reached=... kept=... lost=... lifted_away=... arm_moved=... cube_left=... held_at_first_success=...
lifted_2cm_before_success=... replay_mismatches=...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.data.store import EpisodeStore  # noqa: E402
from robot.console import print_table  # noqa: E402
from robot.sim.maniskill import ManiSkillConfig, ManiSkillSim  # noqa: E402


def replay(sim: ManiSkillSim, ep) -> list[dict]:
    """ManiSkill's success terms and the cube's place at every observation of ``ep`` replayed from its seed."""
    sim.reset(int(ep.info["seed"]))
    out = []
    for t in range(len(ep.actions) + 1):
        info, p = sim.info, sim.privileged()
        out.append({"success": bool(info.get("success")), "placed": bool(info.get("is_obj_placed")),
                    "static": bool(info.get("is_robot_static")), "grasped": bool(info.get("is_grasped")),
                    "cube_z": float(p["cube"][2]), "to_goal": float(np.linalg.norm(p["cube"] - p["goal"]))})
        if t < len(ep.actions):
            sim.step(ep.actions[t])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--task", default="PickCube-v1")
    a = ap.parse_args()
    store = EpisodeStore(a.store, create=False)
    sim = ManiSkillSim(ManiSkillConfig(task=a.task))
    sim.open()
    rows, outcomes, mismatched = [], [], 0
    for i in range(len(store)):
        ep = store.read(i, images=False)
        flags = np.asarray(ep.rewards) > 0
        steps = replay(sim, ep)
        if not np.array_equal([s["success"] for s in steps][:len(flags)], flags):
            mismatched += 1
        until = int(np.flatnonzero(flags)[0]) if flags.any() else len(steps) - 1
        outcomes.append({"success": bool(flags[-1]), "end_to_goal_cm": 100 * steps[-1]["to_goal"],
                         "start_to_goal_cm": 100 * steps[0]["to_goal"],
                         "lifted": max(s["cube_z"] for s in steps[:until + 1]) - steps[0]["cube_z"] > 0.02})
        if not flags.any():
            continue
        first = int(np.flatnonzero(flags)[0])
        after = steps[first:]
        z_after = float(np.max(np.asarray(ep.actions)[first:, 2])) if first < len(ep.actions) else 0.0
        kept = bool(flags[-1])
        s0 = steps[first]
        if kept:
            kind = "kept"
        elif s0["grasped"] and z_after > 0.1:
            kind = "lifted away"
        elif all(s["placed"] for s in after):
            kind = "arm moved"
        else:
            kind = "cube left"
        rows.append({"kind": kind, "held": s0["grasped"], "z_after": z_after, "lift_at_first_cm": 100 * (s0["cube_z"] - steps[0]["cube_z"]),
                     "max_lift_cm": 100 * (max(s["cube_z"] for s in steps[:first + 1]) - steps[0]["cube_z"]),
                     "start_to_goal_cm": 100 * steps[0]["to_goal"], "end_to_goal_cm": 100 * steps[-1]["to_goal"]})
    sim.close()
    by = {k: [o for o in outcomes if o["success"] == (k == "success")] for k in ("success", "failure")}

    def med(k, key):
        return float(np.median([o[key] for o in by[k]])) if by[k] else float("nan")

    print_table(f"{len(outcomes)} episodes of {a.store}, by outcome", ["outcome", "episodes", "median cube-goal at reset (cm)",
                "median cube-goal at end (cm)", "cube-goal at end, 10-90% (cm)", "lifted 2 cm (a pick)"],
                [(k, len(by[k]), f"{med(k, 'start_to_goal_cm'):.1f}", f"{med(k, 'end_to_goal_cm'):.1f}",
                  (f"{np.percentile([o['end_to_goal_cm'] for o in by[k]], 10):.1f}-"
                   f"{np.percentile([o['end_to_goal_cm'] for o in by[k]], 90):.1f}") if by[k] else "-",
                  f"{np.mean([o['lifted'] for o in by[k]]):.0%}" if by[k] else "-") for k in ("success", "failure")])
    kinds = ["kept", "lifted away", "arm moved", "cube left"]
    table = []
    for k in kinds:
        r = [x for x in rows if x["kind"] == k]
        if not r:
            table.append((k, 0, "-", "-", "-", "-", "-", "-"))
            continue
        table.append((k, len(r), f"{np.mean([x['held'] for x in r]):.0%}", f"{np.median([x['z_after'] for x in r]):.2f}",
                      f"{np.median([x['lift_at_first_cm'] for x in r]):.1f}",
                      f"{np.median([x['max_lift_cm'] for x in r]):.1f}", f"{np.median([x['start_to_goal_cm'] for x in r]):.1f}",
                      f"{np.median([x['end_to_goal_cm'] for x in r]):.1f}"))
    print_table(f"{len(rows)} of {len(store)} episodes reached success ({mismatched} replays did not reproduce the recorded flags)",
                ["class", "episodes", "held at first success", "median largest z command after", "median cube lift at first success (cm)",
                 "median highest cube lift until then (cm)",
                 "median cube-goal at reset (cm)", "median cube-goal at end (cm)"], table)
    n = {k: sum(x["kind"] == k for x in rows) for k in kinds}
    print(f"success_end_to_goal_cm={med('success', 'end_to_goal_cm'):.2f} failure_end_to_goal_cm={med('failure', 'end_to_goal_cm'):.2f} "
          f"success_lifted={sum(o['lifted'] for o in by['success'])} failure_lifted={sum(o['lifted'] for o in by['failure'])} "
          f"reached={len(rows)} kept={n['kept']} lost={len(rows) - n['kept']} lifted_away={n['lifted away']} "
          f"arm_moved={n['arm moved']} cube_left={n['cube left']} held_at_first_success={sum(x['held'] for x in rows)} "
          f"lifted_2cm_before_success={sum(x['max_lift_cm'] > 2 for x in rows)} replay_mismatches={mismatched}")


if __name__ == "__main__":
    main()
