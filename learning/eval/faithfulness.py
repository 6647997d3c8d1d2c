"""Action faithfulness: does the world model's imagined outcome change with the actions as the simulator's does?

From the same real start (a seed of the simulated task), the scripted expert plays its plan unperturbed and with
its grasp or its place moved by a given distance in a random horizontal direction — the way SANS near-successes
are made (`robot.sim.expert.sample_perturbation`). The simulator says which of those action sequences succeed.
The world model then replays each sequence's real actions from the same first frame (`evaluate_world_model`, as
in `wvl eval-wm`), and its reward head and the independent success classifier (on the imagined frames) give their
verdicts. Per perturbation kind and size the table sets the simulator's success rate beside the world model's:
a faithful world model says "success" where, and only where, the simulator does.

    cases = collect_cases(sim_cfg, "PickCube-v1", seeds=range(600000, 600024), sizes_cm=(1.5, 3, 5), out=store_dir)
    table = faithfulness_table(evaluate_world_model(wm, cases, classifier=clf))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from learning.data.store import EpisodeStore

KINDS = ("grasp_offset", "place_offset")


def collect_cases(sim_cfg: Any, task: str, seeds: Iterable[int], sizes_cm: Sequence[float], out: str | Path) -> EpisodeStore:
    """For every seed that is not solved at reset: the unperturbed expert, and for each kind and size the expert
    with that perturbation; appended to a new store at ``out`` (its outcome is the simulator's verdict)."""
    from omegaconf import OmegaConf

    from learning.data.collect import make_sim_robot
    from robot.sim.collect import run_scripted_episode

    store = EpisodeStore(out)
    robot = make_sim_robot(OmegaConf.create(sim_cfg) if isinstance(sim_cfg, dict) else sim_cfg, task)
    robot.connect()
    try:
        for seed in seeds:
            cases = [("none", None)] + [(k, s / 100.0) for k in KINDS for s in sizes_cm]
            for n, (kind, size) in enumerate(cases):
                ep = run_scripted_episode(robot, int(seed), kind, rng=np.random.default_rng([int(seed), n]), offset_m=size)
                if ep is None:  # solved at reset: no case to make from this seed
                    break
                store.append(ep)
    finally:
        robot.close()
    return store


def case_of(info: dict[str, Any]) -> tuple[str, float]:
    """(perturbation kind, size in cm rounded to 0.1) recorded in an episode's info."""
    kind = info.get("perturbation", "none")
    return kind, round(float(np.linalg.norm(info.get("perturbation_offset_m", [0.0]))) * 100.0, 1)


def faithfulness_table(result: dict[str, Any], store: EpisodeStore) -> list[dict[str, Any]]:
    """Rows per (kind, size) from `evaluate_world_model`'s ``episodes_detail`` on a `collect_cases` store: episodes,
    the simulator's success rate, the reward head's and the classifier's (on imagined frames) success rates, and
    how often each agrees with the simulator."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in result["episodes_detail"]:
        info = json.loads(store.row(int(r["episode"])).get("info_json") or "{}")
        groups.setdefault(case_of(info), []).append(r)
    rows = []
    for (kind, size), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "none", kv[0])):
        sim = np.array([r["real_success"] for r in rs], bool)
        reward = np.array([bool(r["reward_success"]) for r in rs]) if rs[0]["reward_success"] is not None else None
        visual = np.array([r["visual_success"] for r in rs], bool)
        rows.append({
            "kind": kind, "size_cm": size, "episodes": len(rs), "sim_success": float(sim.mean()),
            "reward_success": None if reward is None else float(reward.mean()),
            "reward_agreement": None if reward is None else float((reward == sim).mean()),
            "classifier_success": float(visual.mean()), "classifier_agreement": float((visual == sim).mean()),
        })
    return rows
