"""GRPO's rollouts from the real simulator instead of the world model: the oracle control (issue 20).

The same GRPO step (`learning.rl.grpo.train_grpo`, same group size, temperature, horizon, updates and start
states) with trajectories played on the simulated robot through the evaluation's rollout path
(`robot.sim.rollout`: episode runner, safety filter, success = the simulator's flag at the episode's end) and
rewarded by the simulator, as SimpleVLA-RL does. It bounds what imagination can reach with this policy and this
budget, and its cost is every simulator step it takes (`SimulatorRollouts.sim_steps`).

    res, collect = grpo_in_simulator(policy, sans, range(len(sans)), instruction, cfg, out, sim_cfg, task)
"""

from __future__ import annotations

import json
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


class SimulatorRollouts:
    """``__call__(policy, picks, generator) -> Rollouts``: G episodes on the simulated robot from the scene of each
    picked start (``seeds[pick]``), ``cfg.horizon_chunks`` chunks at most, rewarded by the simulator."""

    def __init__(self, robot: Any, seeds: Sequence[int], instruction: str, cfg: GRPOConfig) -> None:
        self.robot, self.seeds, self.instruction, self.cfg = robot, [int(s) for s in seeds], instruction, cfg
        self.sim_steps = 0
        self.episodes = 0

    def __call__(self, policy, picks: np.ndarray, generator: torch.Generator) -> Rollouts:
        from robot.sim.rollout import run_sim_episode, sim_runner

        runner = sim_runner(self.robot, max_steps=self.cfg.horizon_chunks * policy.chunk_length, source_kind="policy")
        images, states, tokens, logps, traj, chunk, success, played, final = [], [], [], [], [], [], [], [], []
        n = 0
        for p in picks:
            for _ in range(self.cfg.group_size):
                source = SamplingSource(policy, self.cfg, generator, self.instruction)
                seed = self.seeds[int(p)]
                res = run_sim_episode(runner, self.robot, source, seed, reset=lambda s: (self.robot.sim.reset(s), s)[1])
                if not source.images:
                    raise RuntimeError(f"oracle rollout from seed {seed}: no decision was played ({res.end_reason}: {res.detail})")
                steps = 0 if res.episode is None else len(res.episode.actions)
                self.sim_steps += steps
                self.episodes += 1
                images += source.images
                states += source.states
                tokens += source.tokens
                logps += source.logps
                traj += [n] * len(source.images)
                chunk += list(range(len(source.images)))
                success.append(float(res.success))
                played.append(len(source.images))
                final.append(source.images[-1])
                n += 1
        # decisions chunk by chunk, trajectories in order within a chunk: the layout `imagine` gives GRPO's update
        order = np.lexsort((np.asarray(traj), np.asarray(chunk)))
        return Rollouts(images=np.stack(images)[order], tokens=torch.stack(tokens)[order], old_logp=torch.stack(logps)[order],
                        traj=np.asarray(traj)[order], success=np.asarray(success, np.float32),
                        group=np.repeat(np.arange(len(picks)), self.cfg.group_size), chunks_played=np.asarray(played, np.int64),
                        final_frames=np.stack(final), states=np.stack(states)[order] if states else None)


def grpo_in_simulator(policy, store, indices: Sequence[int], instruction: str, cfg: GRPOConfig, out: str | Path,
                      sim_cfg: dict[str, Any], task: str, key: str = "rollouts=simulator") -> tuple[GRPOResult, SimulatorRollouts]:
    """GRPO from the first frames of ``store``'s episodes (their states and simulator seeds) with every trajectory
    played on the simulated robot built from ``sim_cfg`` (a `sim` config group) and ``task``; writes
    ``out/simulator_cost.json`` (episodes and control steps) and returns the result and the collector."""
    from omegaconf import OmegaConf

    from learning.data.collect import make_sim_robot

    indices = list(indices)
    frames, states, _ = imagination_starts(policy, [(store, indices)], "first")  # the starts GRPO imagines from
    seeds = episode_seeds(store, indices, key)
    robot = make_sim_robot(OmegaConf.create(sim_cfg), task)
    robot.connect()
    try:
        collect = SimulatorRollouts(robot, seeds, instruction, cfg)
        res = train_grpo(policy, None, frames, instruction, cfg, Path(out), start_states=states, rollouts_fn=collect)
    finally:
        robot.close()
    (Path(out) / "simulator_cost.json").write_text(json.dumps({"sim_steps": collect.sim_steps, "episodes": collect.episodes}))
    return res, collect
