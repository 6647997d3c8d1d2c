"""GRPO's rollouts from the real simulator instead of the world model: the oracle control (issue 20).

The same GRPO step (`learning.rl.grpo.train_grpo`, same group size, temperature, horizon, updates and start
states) with trajectories played on the simulated robot through the evaluation's rollout path
(`robot.sim.rollout`: episode runner, safety filter, success = the simulator's flag at the episode's end) and
rewarded by the simulator, as SimpleVLA-RL does. It bounds what imagination can reach with this policy and this
budget, and its cost is every simulator step it takes (`SimulatorRollouts.sim_steps`).

The episodes of an update are independent, so ``workers`` simulator processes play them side by side (each with its
own simulator and a CPU copy of the policy, refreshed with the current weights every update). Every episode samples
from its own generator, seeded from GRPO's, and the simulator rebuilds its scene at every reset (an episode does not
depend on the ones a worker played before it, `ManiSkillConfig.rebuild_scene`), so the rollouts do not depend on how
many workers played them (`tests/rl/test_oracle.py`, `bench/oracle_workers.py`).

    res, collect = grpo_in_simulator(policy, sans, range(len(sans)), instruction, cfg, out, sim_cfg, task, workers=2)
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from learning.rl.grpo import GRPOConfig, GRPOResult, Rollouts, imagination_starts, train_grpo
from robot.runner import Observation
from robot.state import state_vector


def episode_seeds(store, indices: Sequence[int], key: str = "rollouts=simulator") -> list[int]:
    """The simulator seed each episode was reset with (``info.seed``): where the oracle replays its scene from."""
    seeds = [json.loads(store.row(i).get("info_json") or "{}").get("seed") for i in indices]
    if any(s is None for s in seeds):
        raise ValueError(f"{key}: episodes of {store.root} without info.seed cannot be replayed in the simulator")
    return [int(s) for s in seeds]


class SamplingSource:
    """An action source that samples the torch policy at GRPO's temperature and keeps, per chunk, what GRPO's update
    needs: the frame, the robot state, the tokens and their log-probabilities at that temperature."""

    def __init__(self, policy, cfg: GRPOConfig, generator: torch.Generator, instruction: str, camera: str = "front") -> None:
        self.policy, self.cfg, self.generator, self.camera = policy, cfg, generator, camera
        self.features = tuple(getattr(policy, "state_features", ()) or ())
        self.instruction = instruction  # GRPO's, as in imagination (not the rig's wording)
        self.images: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.tokens: list[torch.Tensor] = []
        self.logps: list[torch.Tensor] = []

    def reset(self, instruction: str) -> None:
        pass

    @torch.no_grad()
    def next_chunk(self, obs: Observation) -> np.ndarray:
        img = np.ascontiguousarray(obs.frames[self.camera].rgb, dtype=np.uint8)[None]
        st = state_vector(self.features, obs.state)[None] if self.features else None
        chunk, tok, _ = self.policy.sample(img, self.instruction, temperature=self.cfg.temperature, generator=self.generator, states=st)
        lp = self.policy.token_log_probs(img, self.instruction, tok, temperature=self.cfg.temperature, states=st)
        self.images.append(img[0])
        if st is not None:
            self.states.append(st[0])
        self.tokens.append(tok[0].cpu())
        self.logps.append(lp[0].cpu())
        return chunk[0].cpu().numpy().astype(np.float32)


def sampled_episode(robot: Any, policy, seed: int, sample_seed: int, cfg: GRPOConfig, instruction: str,
                    info: dict[str, Any] | None = None) -> tuple[SamplingSource, Any]:
    """Play the policy on the simulated ``robot`` from the scene of ``seed``, sampling at ``cfg.temperature`` with its
    own generator (``sample_seed``), for ``cfg.horizon_chunks`` chunks at most: the source (the decisions it took) and
    the runner's `EpisodeResult` (the recorded episode, ``info`` added to its info, and the simulator's success)."""
    from robot.sim.rollout import run_sim_episode, sim_runner

    runner = sim_runner(robot, max_steps=cfg.horizon_chunks * policy.chunk_length, source_kind="policy")
    gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(int(sample_seed))
    source = SamplingSource(policy, cfg, gen, instruction)
    return source, run_sim_episode(runner, robot, source, seed, reset=lambda s: (robot.sim.reset(s), s)[1], info=info)


def play_episode(robot: Any, policy, seed: int, sample_seed: int, cfg: GRPOConfig, instruction: str) -> dict[str, Any]:
    """One GRPO trajectory (`sampled_episode`): the decisions it played, the simulator's success flag and the control
    steps it took."""
    source, res = sampled_episode(robot, policy, seed, sample_seed, cfg, instruction)
    if not source.images:
        raise RuntimeError(f"oracle rollout from seed {seed}: no decision was played ({res.end_reason}: {res.detail})")
    return {"images": source.images, "states": source.states, "tokens": source.tokens, "logps": source.logps,
            "success": float(res.success), "steps": 0 if res.episode is None else len(res.episode.actions)}


# ---------------------------------------------------------------------------------------------- workers
_W: dict[str, Any] = {}


def connected_sim_robot(sim_cfg: dict, task: str):
    """The simulated robot named by a `sim` config group (as a dict), connected."""
    from omegaconf import OmegaConf

    from learning.data.collect import make_sim_robot

    robot = make_sim_robot(OmegaConf.create(sim_cfg), task)
    robot.connect()
    return robot


def _worker_init(sim_cfg: dict, task: str, policy_folder: str, log_level: int) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)  # the workers are the parallelism
    from learning.policy import load_policy

    _W.update(robot=connected_sim_robot(sim_cfg, task), policy=load_policy(policy_folder, device="cpu"), update=None)


def _worker_play(job: tuple) -> list[tuple[int, dict[str, Any]]]:
    update, weights, episodes, cfg, instruction = job
    if _W["update"] != update:  # the policy as GRPO's update left it
        _W["policy"].load_state_dict(weights)
        _W["update"] = update
    return [(n, play_episode(_W["robot"], _W["policy"], seed, s, cfg, instruction)) for n, seed, s in episodes]


class SimulatorRollouts:
    """``__call__(policy, picks, generator) -> Rollouts``: G episodes on the simulated robot from the scene of each
    picked start (``seeds[pick]``), ``cfg.horizon_chunks`` chunks at most, rewarded by the simulator; on ``workers``
    simulators (``sim_cfg``: a `sim` config group as a dict, ``task``). A context manager: `close` stops them."""

    def __init__(self, seeds: Sequence[int], instruction: str, cfg: GRPOConfig, sim_cfg: dict[str, Any], task: str,
                 workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        self.seeds, self.instruction, self.cfg = [int(s) for s in seeds], instruction, cfg
        self.sim_cfg, self.task, self.workers = dict(sim_cfg), task, int(workers)
        self.sim_steps = 0
        self.episodes = 0
        self._robot = None
        self._pool = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._updates = 0

    def __enter__(self) -> "SimulatorRollouts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self._robot is not None:
            self._robot.close()
            self._robot = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _play(self, policy, jobs: list[tuple[int, int, int]]) -> dict[int, dict[str, Any]]:
        """(trajectory index, scene seed, sampling seed) -> the played episode, in this process or on the workers."""
        if self.workers == 1:
            if self._robot is None:
                self._robot = connected_sim_robot(self.sim_cfg, self.task)
            return {n: play_episode(self._robot, policy, seed, s, self.cfg, self.instruction) for n, seed, s in jobs}
        if self._pool is None:  # the workers build the policy's architecture from a saved copy, once
            from learning.eval.policy_eval import worker_log_level

            self._tmp = tempfile.TemporaryDirectory(prefix="wvl-oracle-")
            policy.save_pretrained(self._tmp.name)
            self._pool = mp.get_context("spawn").Pool(self.workers, initializer=_worker_init,
                                                      initargs=(self.sim_cfg, self.task, self._tmp.name, worker_log_level()))
        self._updates += 1
        weights = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        g = self.cfg.group_size  # one job per group: starts_per_step jobs shared out as the workers free up
        batches = [(self._updates, weights, jobs[i:i + g], self.cfg, self.instruction) for i in range(0, len(jobs), g)]
        return {n: ep for batch in self._pool.imap_unordered(_worker_play, batches) for n, ep in batch}

    def __call__(self, policy, picks: np.ndarray, generator: torch.Generator) -> Rollouts:
        g = self.cfg.group_size
        n_traj = len(picks) * g
        sample_seeds = torch.randint(0, 2**62, (n_traj,), generator=generator, device=generator.device).tolist()
        jobs = [(n, self.seeds[int(picks[n // g])], sample_seeds[n]) for n in range(n_traj)]
        played = self._play(policy, jobs)
        eps = [played[n] for n in range(n_traj)]
        self.sim_steps += sum(e["steps"] for e in eps)
        self.episodes += n_traj
        traj = np.concatenate([[n] * len(e["images"]) for n, e in enumerate(eps)])
        chunk = np.concatenate([np.arange(len(e["images"])) for e in eps])
        # decisions chunk by chunk, trajectories in order within a chunk: the layout `imagine` gives GRPO's update
        order = np.lexsort((traj, chunk))
        states = [s for e in eps for s in e["states"]]
        return Rollouts(images=np.stack([x for e in eps for x in e["images"]])[order],
                        tokens=torch.stack([x for e in eps for x in e["tokens"]])[order],
                        old_logp=torch.stack([x for e in eps for x in e["logps"]])[order],
                        traj=traj[order], success=np.asarray([e["success"] for e in eps], np.float32),
                        group=np.repeat(np.arange(len(picks)), g),
                        chunks_played=np.asarray([len(e["images"]) for e in eps], np.int64),
                        final_frames=np.stack([e["images"][-1] for e in eps]),
                        states=np.stack(states)[order] if states else None)


def grpo_in_simulator(policy, store, indices: Sequence[int], instruction: str, cfg: GRPOConfig, out: str | Path,
                      sim_cfg: dict[str, Any], task: str, key: str = "rollouts=simulator",
                      workers: int = 1) -> tuple[GRPOResult, SimulatorRollouts]:
    """GRPO from the first frames of ``store``'s episodes (their states and simulator seeds) with every trajectory
    played on ``workers`` simulated robots built from ``sim_cfg`` (a `sim` config group) and ``task``; writes
    ``out/simulator_cost.json`` (episodes and control steps) and returns the result and the collector."""
    indices = list(indices)
    frames, states, _ = imagination_starts(policy, [(store, indices)], "first")  # the starts GRPO imagines from
    seeds = episode_seeds(store, indices, key)
    with SimulatorRollouts(seeds, instruction, cfg, sim_cfg, task, workers) as collect:
        res = train_grpo(policy, None, frames, instruction, cfg, Path(out), start_states=states, rollouts_fn=collect)
    (Path(out) / "simulator_cost.json").write_text(json.dumps({"sim_steps": collect.sim_steps, "episodes": collect.episodes,
                                                               "workers": workers}))
    return res, collect
