"""SANS collection on the simulated robot: scripted successes and near-successes, labelled by the simulator.

`collect_sans` yields Episodes until it has N successes and M near-successes. A requested success whose
expert failed is dropped (and counted); a requested near-success that succeeded by luck is resampled with a
new seed; a seed whose task is already solved before the arm moves is skipped (the goal spawned next to the
cube). The outcome written into each episode is the simulator's success flag at the end of the episode.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from robot.episode import Episode
from robot.runner import EpisodeRunner
from robot.sim.expert import DEFAULT_GAIN, PERTURBATIONS, ExpertSource, check_offsets, sample_perturbation
from robot.sim.maniskill import SimRobot
from robot.sim.rollout import run_sim_episode, sim_runner

log = logging.getLogger(__name__)


@dataclass
class CollectStats:
    kept: Counter = field(default_factory=Counter)
    expert_failures: int = 0  # requested success, simulator said failure: dropped
    lucky_successes: int = 0  # requested near-success, simulator said success: resampled
    trivial_seeds: int = 0  # solved before the arm moved: skipped
    near_success_attempts: int = 0
    success_attempts: int = 0

    @property
    def expert_success_rate(self) -> float:
        return (self.success_attempts - self.expert_failures) / max(self.success_attempts, 1)

    @property
    def near_success_failure_rate(self) -> float:
        """Share of near-success attempts the simulator judged a failure (what we want)."""
        return (self.near_success_attempts - self.lucky_successes) / max(self.near_success_attempts, 1)


def run_scripted_episode(
    robot: SimRobot,
    seed: int,
    perturbation_kind: str = "none",
    rng: np.random.Generator | None = None,
    runner: EpisodeRunner | None = None,
    action_noise: float = 0.0,
    gain: float = DEFAULT_GAIN,
    offset_m: float | None = None,
    offsets: dict[str, tuple[float, float]] | None = None,
) -> Episode | None:
    """One expert episode through the rig's episode runner and safety filter (`robot.sim.rollout`); None for a
    trivial seed (already solved at reset). A perturbed expert's episode ends when its plan is done.
    ``action_noise``: see `ExpertSource` (the noise-free labels go to ``extras["expert_action"]``). ``offset_m``: the
    perturbation's size (default: drawn from ``offsets[kind]``, by default `NEAR_SUCCESS_OFFSETS`)."""
    rng = rng or np.random.default_rng(seed)
    sim = robot.sim
    sim.reset(seed)
    if sim.success:
        return None
    pert = sample_perturbation(perturbation_kind, rng, offset_m, offsets)
    source = ExpertSource(sim, pert, max_translation_m=robot.arm.limits.max_translation_m, action_noise=action_noise, rng=rng,
                          gain=gain)
    runner = runner or sim_runner(robot, source_kind="scripted")
    perturbed = perturbation_kind != "none"
    res = run_sim_episode(runner, robot, source, seed, reset=lambda s: s,  # already reset (and checked) above
                          stop=(lambda: source.done and not sim.success) if perturbed else None, info=pert.describe())
    ep = res.episode
    if ep is None:
        raise RuntimeError(f"seed {seed}: the simulated rig recorded nothing ({res.end_reason}: {res.detail})")
    if gain != DEFAULT_GAIN:
        ep.info["expert_gain"] = float(gain)
    if action_noise > 0:
        ep.extras["expert_action"] = source.labels_for(ep.actions)
        ep.info["expert_action_noise"] = float(action_noise)
    if perturbed and ep.outcome == "failure":
        ep.outcome = "near_success"
    return ep


def collect_sans(
    robot: SimRobot,
    n_success: int,
    n_near_success: int,
    seed: int = 0,
    near_success_mix: dict[str, float] | None = None,
    on_episode: Callable[[Episode, CollectStats], None] | None = None,
    max_attempts_factor: int = 5,
    stats: CollectStats | None = None,
    action_noise: float = 0.0,
    gain: float = DEFAULT_GAIN,
    near_success_offsets: dict[str, Any] | None = None,
    success_place_offset: tuple[float, float] = (0.0, 0.0),
) -> Iterator[Episode]:
    """Yield successes and near-successes interleaved (so a cut-short run stays ~1:1); fills ``stats``.
    ``near_success_offsets``: ``{kind: (min, max)}`` m, the misses of the near-successes (default
    `NEAR_SUCCESS_OFFSETS`). ``success_place_offset`` (min, max) m: the successes place this far off the goal (a
    ``place_offset`` run that the simulator must still judge a success; (0, 0) = on the goal)."""
    mix = near_success_mix or {"place_offset": 2 / 3, "grasp_offset": 1 / 3}
    near_offsets = check_offsets(near_success_offsets or {})
    success_offsets = check_offsets({"place_offset": success_place_offset}, "success_place_offset")
    bad = set(mix) - (set(PERTURBATIONS) - {"none"})
    if bad:
        raise ValueError(f"near_success_mix: unknown perturbation kinds {sorted(bad)}; valid: {PERTURBATIONS[1:]}")
    kinds, probs = list(mix), np.array(list(mix.values()), dtype=float)
    probs = probs / probs.sum()
    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else CollectStats()
    next_seed = seed
    order = _interleave(n_success, n_near_success)
    attempts_left = max_attempts_factor * max(len(order), 1)
    for want in order:
        while True:
            if attempts_left <= 0:
                raise RuntimeError(
                    f"gave up after {max_attempts_factor}x attempts: expert success rate {stats.expert_success_rate:.0%}, "
                    f"near-success failure rate {stats.near_success_failure_rate:.0%}; check the task/expert config"
                )
            attempts_left -= 1
            s, next_seed = next_seed, next_seed + 1
            if want == "success":
                kind, offsets = ("place_offset", success_offsets) if success_offsets["place_offset"][1] > 0 else ("none", None)
            else:
                kind, offsets = str(rng.choice(kinds, p=probs)), near_offsets
            ep = run_scripted_episode(robot, s, kind, np.random.default_rng([seed, s]), action_noise=action_noise, gain=gain,
                                      offsets=offsets)
            if ep is None:
                stats.trivial_seeds += 1
                continue
            if want == "success":
                stats.success_attempts += 1
                if ep.outcome != "success":
                    stats.expert_failures += 1
                    log.info("seed %d: expert failed; dropped", s)
                    continue
            else:
                stats.near_success_attempts += 1
                if ep.outcome == "success":
                    stats.lucky_successes += 1
                    log.info("seed %d: near-success attempt succeeded by luck; resampling", s)
                    continue
            stats.kept[ep.outcome] += 1
            if on_episode:
                on_episode(ep, stats)
            yield ep
            break


def _interleave(n_a: int, n_b: int) -> list[str]:
    out: list[str] = []
    a = b = 0
    while a < n_a or b < n_b:
        if a < n_a and (b >= n_b or a * max(n_b, 1) <= b * max(n_a, 1)):
            out.append("success")
            a += 1
        else:
            out.append("near_success")
            b += 1
    return out
