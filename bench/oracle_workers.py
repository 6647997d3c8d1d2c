"""The oracle's simulator rollouts on 1 and on N worker processes, side by side in one run.

One GRPO update's rollouts (``--starts`` start scenes x ``--group`` episodes, ``--horizon`` chunks at most) of a
saved policy (``--policy``, e.g. the loop's SFT policy; default: a freshly initialised compact VLA with the default
state input) on simulated PickCube, timed with `learning.rl.oracle.SimulatorRollouts` at workers = 1 and at
``--workers``. The first update starts the simulators (and workers) and is timed apart; ``--repeats`` more are timed.
Each episode samples from its own seed and the simulator rebuilds its scene at every reset, so both should play the
same episodes: the table says whether they did on the first update (fresh simulators) and on the later ones
(simulators that have played episodes before).

    .venv/bin/python bench/oracle_workers.py [--policy <policy folder>] [--workers 2] [--repeats 2]

Last line: episodes_per_s_1=... episodes_per_s_N=... speedup=... same_first_update=... same_later_updates=...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.rl.grpo import GRPOConfig  # noqa: E402
from learning.rl.oracle import SimulatorRollouts  # noqa: E402
from robot.console import print_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.policy:
        from learning.policy import load_policy

        policy = load_policy(a.policy)
    else:
        from learning.policy import WordTokenizer
        from learning.policy.compact import CompactVLA
        from robot.sim.maniskill import task_spec
        from robot.state import DEFAULT_POLICY_STATE

        instruction = task_spec("PickCube-v1").instruction
        policy = CompactVLA(vocab=WordTokenizer.build([instruction]).vocab, instructions=[instruction],
                            state_features=list(DEFAULT_POLICY_STATE), state_mean=[0, 0, 0.1, 0.5],
                            state_std=[0.05, 0.05, 0.05, 0.5]).eval()
    cfg = GRPOConfig(group_size=a.group, starts_per_step=a.starts, horizon_chunks=a.horizon, temperature=a.temperature)
    seeds = list(range(4_000_000, 4_000_000 + a.starts))  # fresh scenes, used for nothing else
    picks = np.arange(a.starts)
    rows, rate, played = [], {}, {}
    for workers in (1, a.workers):
        t0 = time.perf_counter()
        with SimulatorRollouts(seeds, policy.default_instruction, cfg, {"kind": "maniskill"}, "PickCube-v1",
                               workers=workers) as collect:
            gen = torch.Generator().manual_seed(0)
            batches = [collect(policy, picks, gen)]  # starts the simulators (and workers)
            start = time.perf_counter() - t0
            steps0, t1 = collect.sim_steps, time.perf_counter()
            batches += [collect(policy, picks, gen) for _ in range(a.repeats)]
            sec = time.perf_counter() - t1
            steps = collect.sim_steps - steps0
        n = a.repeats * len(picks) * a.group
        rate[workers] = n / sec
        played[workers] = [(b.tokens, b.success) for b in batches]
        rows.append((workers, f"{start:.1f}", n, steps, f"{sec:.1f}", f"{n / sec:.2f}", f"{steps / sec:.0f}",
                     f"{np.mean([b.success.mean() for b in batches[1:]]):.3f}"))
    same = [torch.equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(played[1], played[a.workers])]
    first, later = same[0], all(same[1:])
    print_table(f"oracle rollouts: {a.repeats} timed updates of {a.starts} x {a.group} episodes after a first one (same episodes "
                f"with 1 and {a.workers} workers: first update {first}, later updates {later})",
                ["workers", "first update s (start-up)", "episodes", "control steps", "seconds", "episodes/s", "steps/s", "success"],
                rows)
    print(f"episodes_per_s_1={rate[1]:.3f} episodes_per_s_{a.workers}={rate[a.workers]:.3f} "
          f"speedup={rate[a.workers] / rate[1]:.2f} same_first_update={int(first)} same_later_updates={int(later)}")


if __name__ == "__main__":
    main()
