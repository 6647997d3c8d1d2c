"""`wvl collect sim`: scripted SANS episodes on the simulated robot, written into an episode store."""

from __future__ import annotations

import logging
import time

import numpy as np
from omegaconf import DictConfig, OmegaConf

from learning.data.store import EpisodeStore, VideoSettings
from robot.console import print_table, progress
from robot.sim.registry import make_sim_robot, sim_kind

log = logging.getLogger(__name__)


def sans_collector(sim_cfg: DictConfig | dict):
    """(collect_sans, CollectStats) for the simulated robot named by a `sim` config group."""
    if sim_kind(sim_cfg) == "libero":  # demos or scripted successes; near-successes = perturbed replays
        from robot.sim.libero_collect import LiberoCollectStats, collect_sans

        return collect_sans, LiberoCollectStats
    from robot.sim.collect import CollectStats, collect_sans

    return collect_sans, CollectStats


def main(cfg: DictConfig, mode: str | None = "sim") -> int:
    collect_sans, CollectStats = sans_collector(cfg.sim)
    if cfg.success < 0 or cfg.near_success < 0:
        raise ValueError(f"success/near_success: must be >= 0, got {cfg.success}/{cfg.near_success}")
    robot = make_sim_robot(OmegaConf.to_container(cfg.sim, resolve=True), cfg.task)  # validates the task before anything is written
    store = EpisodeStore(cfg.out, VideoSettings(**cfg.video))
    robot.connect()
    stats = CollectStats()
    total = int(cfg.success + cfg.near_success)
    lengths: dict[str, list[int]] = {"success": [], "near_success": []}
    kinds: dict[str, int] = {}
    t0 = time.perf_counter()
    noise = float(cfg.get("action_noise", 0.0) or 0.0)
    if noise and sim_kind(cfg.sim) != "maniskill":
        raise ValueError(f"action_noise: the noisy expert (DART) exists for the ManiSkill tasks only, not sim={cfg.sim.kind}")
    gain = cfg.get("expert_gain")
    if gain is not None and sim_kind(cfg.sim) != "maniskill":
        raise ValueError(f"expert_gain: the scripted expert's gain exists for the ManiSkill tasks only, not sim={cfg.sim.kind}")
    extra = {"action_noise": noise} if noise else {}
    offsets = {k: v for k, v in (cfg.get("near_success_offsets") or {}).items() if v is not None}
    success_offset = tuple(float(x) for x in (cfg.get("success_place_offset") or (0.0, 0.0)))
    if (offsets or any(success_offset)) and sim_kind(cfg.sim) != "maniskill":
        raise ValueError(f"near_success_offsets/success_place_offset: the scripted expert's offsets exist for the ManiSkill "
                         f"tasks only, not sim={cfg.sim.kind}")
    if offsets:
        extra["near_success_offsets"] = offsets
    if any(success_offset):
        extra["success_place_offset"] = success_offset
    if gain is not None:
        extra["gain"] = float(gain)
    with progress() as bar:
        job = bar.add_task(f"collect {cfg.task}", total=total, status="")
        for ep in collect_sans(robot, cfg.success, cfg.near_success, seed=cfg.seed,
                               near_success_mix=dict(cfg.near_success_mix), stats=stats, **extra):
            store.append(ep)
            lengths[ep.outcome].append(len(ep))
            if ep.outcome == "near_success":
                kinds[ep.info["perturbation"]] = kinds.get(ep.info["perturbation"], 0) + 1
            bar.update(job, advance=1, status=f"success {stats.kept['success']}  near-success {stats.kept['near_success']}")
    robot.close()
    elapsed = time.perf_counter() - t0
    rows = [(o, len(v), f"{np.mean(v):.1f}" if v else "-") for o, v in lengths.items()]
    print_table(f"SANS collection: {cfg.task} -> {store.root} ({elapsed:.0f} s)", ["outcome", "episodes", "mean length"], rows)
    print_table("attempts", ["what", "value"], [
        ("expert success rate (simulator)", f"{stats.expert_success_rate:.1%} of {stats.success_attempts}"),
        ("near-success attempts judged failure", f"{stats.near_success_failure_rate:.1%} of {stats.near_success_attempts}"),
        ("near-success kinds", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-"),
        ("seeds skipped (solved at reset)", stats.trivial_seeds),
        ("store episodes in total", len(store)),
    ])
    return 0
