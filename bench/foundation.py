"""Foundation benchmark: simulated-robot speed, episode-store write throughput, training-window reads.

    .venv/bin/python bench/foundation.py [--quick]

Prints a table, then one line of headline figures:
    sim_steps_per_s_64=… sim_steps_per_s_256=… store_write_mb_s=… window_read_samples_per_s=…
sim: one ManiSkill PickCube-v1 env, pd_ee_delta_pose, random actions, RGB rendered every step (CPU, lavapipe).
store: synthetic 40-step episodes (64x64 and 256x256 RGB + state), MB = raw episode bytes written per second
(H.264 encode + Parquet + fsync). windows: random batches of 32 (K=8) from an in-memory WindowDataset.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.data.store import EpisodeStore  # noqa: E402
from learning.data.windows import WindowDataset, WindowSpec  # noqa: E402
from robot.console import print_table  # noqa: E402
from tests.factories import random_episode  # noqa: E402


def sim_steps_per_s(size: int, steps: int) -> float:
    from robot.sim.maniskill import ManiSkillConfig, SimRobot

    robot = SimRobot(ManiSkillConfig(image_size=size))
    robot.connect()
    rng = np.random.default_rng(0)
    robot.sim.reset(0)
    for _ in range(3):  # warm-up
        robot.arm.send_action(rng.uniform(-1, 1, 7))
        robot.cameras["front"].read()
    t0 = time.perf_counter()
    for i in range(steps):
        if i and i % 40 == 0:
            robot.sim.reset(i)
        robot.arm.send_action(rng.uniform(-1, 1, 7))
        robot.cameras["front"].read()
    rate = steps / (time.perf_counter() - t0)
    robot.close()
    return rate


def store_write(size: int, n: int, root: Path) -> tuple[float, float]:
    eps = [random_episode(T=40, H=size, W=size, seed=i, outcome=("success", "near_success")[i % 2]) for i in range(n)]
    raw = sum(len(e.to_bytes()) for e in eps)
    store = EpisodeStore(root)
    t0 = time.perf_counter()
    for e in eps:
        store.append(e)
    dt = time.perf_counter() - t0
    return raw / dt / 1e6, n / dt


def window_reads(root: Path, batches: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    ds = WindowDataset(EpisodeStore(root, create=False), WindowSpec(chunk=8))
    load = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        ds.batch(rng.integers(0, len(ds), 32))
    return batches * 32 / (time.perf_counter() - t0), load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps/episodes (smoke run)")
    args = ap.parse_args()
    steps, n_eps, batches = (20, 4, 20) if args.quick else (150, 20, 200)
    rows = []
    s64 = sim_steps_per_s(64, steps)
    rows.append(("sim steps/s, RGB 64x64", f"{s64:.1f}"))
    s256 = sim_steps_per_s(256, steps)
    rows.append(("sim steps/s, RGB 256x256", f"{s256:.1f}"))
    with tempfile.TemporaryDirectory() as d:
        mb64, eps64 = store_write(64, n_eps, Path(d) / "s64")
        rows.append(("store write MB/s (64x64, 40 steps)", f"{mb64:.1f} ({eps64:.1f} episodes/s)"))
        mb256, eps256 = store_write(256, max(2, n_eps // 4), Path(d) / "s256")
        rows.append(("store write MB/s (256x256, 40 steps)", f"{mb256:.1f} ({eps256:.1f} episodes/s)"))
        wps, load = window_reads(Path(d) / "s64", batches)
        rows.append(("window reads samples/s (64x64, K=8, batch 32)", f"{wps:.0f} (decode+load {load:.2f} s for {n_eps} episodes)"))
    print_table("foundation benchmark", ["what", "value"], rows)
    print(f"sim_steps_per_s_64={s64:.1f} sim_steps_per_s_256={s256:.1f} store_write_mb_s={mb64:.1f} window_read_samples_per_s={wps:.0f}")


if __name__ == "__main__":
    main()
