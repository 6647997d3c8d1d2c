"""Which perturbed replays of a LIBERO success make near-successes: failure rate against offset size.

    .venv/bin/python bench/libero_sans.py [--task 0] [--seeds 100 101] [--directions 4]

For each seed: the scripted expert (robot/sim/libero_expert.py) solves LIBERO-Object task `--task` from the
placement sampled with that seed; then its actions are replayed from the same start with one perturbation
(robot/sim/libero_collect.py: `place_offset` = the hand moves sideways just before the release, `grasp_offset`
= at the top of the approach) of each size, in `--directions` evenly spaced directions (random phase). The
benchmark's own predicate says success or failure; the table also gives where the object ends (distance of
its centre from the target region's centre, in the table plane). Every episode runs as SANS collection runs it:
`record_rollout`, through the rig's episode runner and safety filter, the replays playing the success's commands.

Last line: place_offset_fail_9cm=… grasp_offset_fail_3_5cm=… expert_success=…
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.console import print_table  # noqa: E402

SIZES_M = {"place_offset": (0.05, 0.07, 0.09, 0.11), "grasp_offset": (0.025, 0.035, 0.045)}


def main() -> int:
    from robot.sim.libero import LiberoConfig, LiberoRobot
    from robot.sim.libero_collect import ActionReplay, Start, _Planned, commands, perturbation_point, record_rollout
    from robot.sim.libero_expert import pick_place_goal

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--directions", type=int, default=4)
    args = ap.parse_args()
    robot = LiberoRobot(LiberoConfig(suite="libero_object", task=args.task, image_size=32, wrist_camera=False))
    robot.connect()
    sim = robot.sim

    rng = np.random.default_rng(0)
    results: dict[tuple[str, float], list[tuple[bool, float]]] = defaultdict(list)
    expert_ok = 0
    for seed in args.seeds:
        success = record_rollout(robot, Start(seed=seed), _Planned(robot), settle_after_success=5)
        if success.outcome != "success":
            print(f"seed {seed}: the expert failed; skipped")
            continue
        expert_ok += 1
        start = Start(state=np.asarray(success.info["start_state"]))
        actions = commands(success)
        obj, target = pick_place_goal(sim.privileged()["goal"])
        for kind, sizes in SIZES_M.items():
            at = perturbation_point(kind, actions, success.ee_pose[:-1, 2])
            for size in sizes:
                for angle in np.linspace(0, 2 * np.pi, args.directions, endpoint=False) + rng.uniform(0, np.pi / 2):
                    offset = np.array([size * np.cos(angle), size * np.sin(angle), 0.0])
                    record_rollout(robot, start, ActionReplay(actions, at, offset, hold_steps=10), settle_after_success=10**9)
                    p = sim.privileged()
                    where = p["regions"][target]["pos"] if target in p["regions"] else p["objects"][target]["centre"]
                    dist = float(np.linalg.norm(p["objects"][obj]["pos"][:2] - where[:2]))
                    results[(kind, size)].append((bool(sim.success), dist))
    robot.close()
    rows, fail = [], {}
    for (kind, size), v in sorted(results.items()):
        f = 1 - np.mean([ok for ok, _ in v])
        fail[(kind, size)] = f
        rows.append((kind, f"{100 * size:.1f}", f"{f:.2f}", f"{100 * np.median([d for _, d in v]):.1f}", len(v)))
    print_table(f"perturbed replays of scripted successes, LIBERO-Object task {args.task}, seeds {args.seeds}",
                ["perturbation", "offset cm", "failure rate", "object to target cm (median)", "replays"], rows)
    print(f"place_offset_fail_9cm={fail.get(('place_offset', 0.09), float('nan')):.2f} "
          f"grasp_offset_fail_3_5cm={fail.get(('grasp_offset', 0.035), float('nan')):.2f} expert_success={expert_ok}/{len(args.seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
