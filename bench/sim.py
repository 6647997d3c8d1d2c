"""Simulated robots side by side: env steps per second with rendering, ManiSkill vs LIBERO, on this CPU.

    .venv/bin/python bench/sim.py [--rounds 3] [--steps 10]

Each step is what a rig does per control period through our wrappers: `arm.send_action` (physics) and a
`read()` of the camera(s). ManiSkill PickCube-v1 (SAPIEN, lavapipe Vulkan) renders its one fixed camera inside
the step; LIBERO-Object task 0 (MuJoCo 3, EGL: Mesa llvmpipe here) renders lazily on read, so its physics
and each camera are timed apart and "front" (agentview only) and "both" (front + wrist, LIBERO's two cameras,
our default) come from the same steps. Random actions in [-1, 1] (LIBERO: x0.3, so the arm stays on the table),
a reset every `--steps` steps (the benchmark's initial states 0, 1, ... / seeds 0, 1, ...; not timed).
The configurations run in turn within each round so machine load hits them alike (this machine is shared);
steps/s = 1 / median step time over all rounds.

Last line (ManiSkill 64x64 one camera; LIBERO 128x128 both cameras, the defaults of `sim=maniskill` and
`sim=libero`): maniskill_steps_per_s_64=… libero_steps_per_s_128=…
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.console import print_table  # noqa: E402


class ManiSkillRig:
    def __init__(self, size: int) -> None:
        from robot.sim.maniskill import ManiSkillConfig, SimRobot

        self.name, self.size = "maniskill", size
        self.robot = SimRobot(ManiSkillConfig(image_size=size))
        self.robot.connect()
        self.rng = np.random.default_rng(0)
        self.episode = 0

    def reset(self) -> None:
        self.robot.sim.reset(self.episode)
        self.episode += 1

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.robot.arm.send_action(self.rng.uniform(-1, 1, 7))
        self.robot.cameras["front"].read()
        return {"front": time.perf_counter() - t0}


class LiberoRig:
    def __init__(self, size: int) -> None:
        from robot.sim.libero import LiberoConfig, LiberoRobot

        self.name, self.size = "libero", size
        self.robot = LiberoRobot(LiberoConfig(suite="libero_object", task=0, image_size=size, wrist_camera=True))
        self.robot.connect()
        self.rng = np.random.default_rng(0)
        self.episode = 0

    def reset(self) -> None:
        self.robot.sim.reset(self.episode % self.robot.sim.n_init_states)
        self.episode += 1

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.robot.arm.send_action(0.3 * self.rng.uniform(-1, 1, 7))
        t1 = time.perf_counter()
        self.robot.cameras["front"].read()
        t2 = time.perf_counter()
        self.robot.cameras["wrist"].read()
        t3 = time.perf_counter()
        return {"physics": t1 - t0, "front": t2 - t1, "wrist": t3 - t2}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration per round")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    t_build = {}
    rigs = []
    for cls, size in ((ManiSkillRig, 64), (ManiSkillRig, 256), (LiberoRig, 128), (LiberoRig, 256)):
        t0 = time.perf_counter()
        rigs.append(cls(size))
        t_build[id(rigs[-1])] = time.perf_counter() - t0
    times: dict[int, list[dict[str, float]]] = {id(r): [] for r in rigs}
    for _ in range(args.rounds):
        for rig in rigs:
            rig.reset()
            rig.step()  # warm-up (first render after a reset)
            times[id(rig)] += [rig.step() for _ in range(args.steps)]
    load_end = os.getloadavg()[0]

    rows, headline = [], {}
    for rig in rigs:
        t = {k: np.array([s[k] for s in times[id(rig)]]) for k in times[id(rig)][0]}
        if "physics" in t:
            variants = {"front": t["physics"] + t["front"], "both": t["physics"] + t["front"] + t["wrist"]}
            physics = f"{1e3 * np.median(t['physics']):.0f}"
        else:
            variants = {"front": t["front"]}
            physics = "in step"
        for cams, per_step in variants.items():
            sps = 1.0 / np.median(per_step)
            rows.append((rig.name, rig.size, cams, f"{sps:.1f}", f"{1e3 * np.percentile(per_step, 50):.0f}",
                         f"{1e3 * np.percentile(per_step, 90):.0f}", physics, f"{t_build[id(rig)]:.1f}"))
            if isinstance(rig, ManiSkillRig) and rig.size == 64:
                headline["maniskill_steps_per_s_64"] = sps
            if isinstance(rig, LiberoRig) and rig.size == 128 and cams == "both":
                headline["libero_steps_per_s_128"] = sps
        rig.robot.close()
    n = args.rounds * args.steps
    print_table(f"env steps/s with rendering (CPU), {n} steps/row, {args.rounds} interleaved rounds",
                ["sim", "px", "cameras", "steps/s", "p50 ms", "p90 ms", "phys ms", "build s"], rows)
    print("maniskill = PickCube-v1, one fixed camera; libero = LIBERO-Object task 0, cameras front (agentview) or both\n"
          "(front + wrist, the default); px = square image side; phys ms = physics alone (p50); build s = env creation")
    print_table("machine", ["cores", "load avg (1 min) start", "end"], [(os.cpu_count(), f"{load_start:.1f}", f"{load_end:.1f}")])
    print(" ".join(f"{k}={v:.1f}" for k, v in headline.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
