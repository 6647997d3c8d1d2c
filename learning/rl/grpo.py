"""GRPO in imagination: the policy acts inside the world model, the reward head scores, no robot time.

One GRPO step, top to bottom (SimpleVLA-RL's recipe on World-VLA-Loop's imagined environment):

1. take ``starts_per_step`` start frames (real first frames from the store), repeat each ``group_size`` (G)
   times;
2. roll every copy out in ``WorldModelEnv``: the policy *samples* an action chunk from the current frame at
   ``temperature`` (recording the chunk's tokens and their log-probs), the world model imagines the next K
   frames and their per-frame success probability; repeat until the reward head says success
   (> ``success_threshold``, 0.9 as in the paper) or ``horizon_chunks`` chunks have been played;
3. trajectory reward R = 1 if it succeeded, else 0 (``reward: success``), or the highest success probability the
   reward head gave any of its frames (``reward: probability``: a ranking even when no rollout crosses the
   threshold); advantages are group-relative, A = (R - mean_group R) / std_group R (A = R - mean_group R for the
   probability, whose small differences the std would blow up to +-1); groups whose members all agree carry no
   signal and are dropped;
4. every decision (chunk) of a trajectory gets its trajectory's advantage; minimise the PPO-clip loss on the
   tokens (asymmetric clip 0.2 / 0.28), optionally + ``kl_coef`` * KL(policy || SFT policy) (0 by default),
   normalised as ``loss_norm`` says (default ``trajectory``: each rollout weighs the same, whatever its length;
   learning/rl/grpo_math.py); ``epochs`` passes over the batch in about-equal minibatches of at most
   ``minibatch`` decisions (a batch smaller than that is one minibatch, still ``epochs`` optimizer steps).

Logged per step: imagined success, informative-group fraction, loss, clip fraction, approx KL, entropy,
advantage statistics, optimizer steps, seconds spent imagining vs updating, and how far the *greedy* policy (the
one exported) has moved from the starting policy on a fixed probe set of start frames
(``probe/greedy_token_change``: share of greedy action tokens that differ; ``probe/greedy_action_delta``: mean
|a - a_start| of the greedy chunk) - GRPO shapes the sampling distribution at ``temperature``, and nothing else
says whether its argmax moved.

On several ranks (torchrun, learning/distributed.py) the same step is computed, not an approximation of it: each
rank imagines ``starts_per_step / world_size`` whole groups (a group is never split, so its statistics are
local), every rollout keeps the world-model noise and policy draws it has in a 1-process run, the minibatches
are the 1-process run's minibatches of decisions with each rank computing the loss of the decisions it holds, and
the policy's gradients are reduced once per optimizer step (FSDP2). The bookkeeping that makes it so lives in
learning/rl/grpo_ranks.py; `grpo_update` itself reads as the single-process step.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from learning.distributed import Dist, current, distributed_session, wrap_policy
from learning.rl.grpo_math import LOSS_NORMS, clipped_token_loss, group_advantages, kl_to_reference
from learning.rl.grpo_ranks import KeptDecisions, skip_draws
from learning.rl.imagination import play
from robot.config_dict import dataclass_from_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GRPOConfig:
    steps: int = 20  # GRPO updates
    group_size: int = 8  # G: rollouts per start state (SimpleVLA-RL: 8)
    starts_per_step: int = 8  # distinct start frames per update
    temperature: float = 1.6  # sampling temperature (SimpleVLA-RL: 1.6)
    horizon_chunks: int = 5  # imagined chunks per trajectory (x K actions)
    success_threshold: float = 0.9  # reward-head probability that counts as success (paper: 0.9)
    reward: str = "success"  # success: R = 1 above the threshold, else 0 | probability: R = max success probability
    lr: float = 1e-5  # SimpleVLA-RL uses 5e-6 for a 7B VLA; a compact VLA tolerates more
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0  # optional KL to the SFT policy
    epochs: int = 1  # passes over each batch of rollouts
    minibatch: int = 64  # at most this many decisions per gradient step (the batch is split into about-equal parts)
    # token | trajectory | constant (learning/rl/grpo_math.py LOSS_NORMS). trajectory: a success stops early and
    # plays few tokens, a failure plays every chunk; a token mean lets the failures' length out-vote the success.
    loss_norm: str = "trajectory"
    max_grad_norm: float = 1.0
    num_inference_steps: int = 2  # world-model denoising steps per imagined chunk (few-step Euler)
    probe_starts: int = 32  # start frames on which the greedy policy's drift is measured every step (0 = none)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "group_size", "starts_per_step", "horizon_chunks", "epochs", "minibatch"):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name}: must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"grpo.group_size: must be >= 2 (advantages are group-relative), got {self.group_size}")
        if not self.temperature > 0:
            raise ValueError(f"grpo.temperature: must be > 0, got {self.temperature}")
        if self.reward not in ("success", "probability"):
            raise ValueError(f"grpo.reward: {self.reward!r} is not 'success' or 'probability'")
        if not 0 < self.success_threshold < 1:
            raise ValueError(f"grpo.success_threshold: must be in (0, 1), got {self.success_threshold}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(f"grpo.clip_low/clip_high: need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}/{self.clip_high}")
        if self.lr <= 0 or self.kl_coef < 0:
            raise ValueError(f"grpo.lr must be > 0 and grpo.kl_coef >= 0, got {self.lr}/{self.kl_coef}")
        if self.loss_norm not in LOSS_NORMS:
            raise ValueError(f"grpo.loss_norm: {self.loss_norm!r} is not one of {sorted(LOSS_NORMS)}")
        if self.probe_starts < 0:
            raise ValueError(f"grpo.probe_starts: must be >= 0, got {self.probe_starts}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GRPOConfig":
        return dataclass_from_dict(cls, d, "grpo config")


@dataclass
class Rollouts:
    """One batch of imagined trajectories, flattened to decisions (one decision = one sampled chunk).

    images (N, H, W, 3) uint8: the frame each chunk was chosen from; tokens / old_logp (N, L); traj (N,) the
    trajectory of each decision; success (n_traj,) float; group (n_traj,) the start state of each trajectory.
    """

    images: np.ndarray
    tokens: torch.Tensor
    old_logp: torch.Tensor
    traj: np.ndarray
    success: np.ndarray
    group: np.ndarray
    chunks_played: np.ndarray  # (n_traj,) chunks until done
    final_frames: np.ndarray  # (n_traj, H, W, 3) last imagined frame (for logging/videos)
    states: np.ndarray | None = None  # (N, S) the robot state each chunk was chosen with (a state-input policy)
    reward_max: np.ndarray | None = None  # (n_traj,) highest success probability over the imagined frames

    def rewards(self, kind: str) -> np.ndarray:
        """GRPO's trajectory rewards (n_traj,): the success flag, or the highest success probability."""
        if kind == "probability":
            if self.reward_max is None:
                raise ValueError("grpo.reward=probability: these rollouts carry no success probabilities (the simulator's "
                                 "are 0/1: use reward=success)")
            return self.reward_max
        return self.success


@torch.no_grad()
def imagine(policy, env, start_frames: np.ndarray, instruction: str, cfg: GRPOConfig, generator: torch.Generator,
            dist: Dist | None = None, start_states: np.ndarray | None = None, reckoner=None) -> Rollouts:
    """Roll out G copies of every start frame in the world model with the policy sampling at cfg.temperature.
    With ``dist``, ``start_frames`` are this rank's share of the step's starts (whole groups); see the module docstring.
    A policy with a state input needs ``start_states`` (S, F); after every chunk they advance by the world model's
    state head when it imagines exactly the policy's state features, otherwise by ``reckoner``
    (`learning.rl.imagined_state.DeadReckoning`)."""
    dist = dist or Dist()
    S, G = len(start_frames), cfg.group_size
    frames = np.repeat(start_frames, G, axis=0)  # (S*G, H, W, 3)
    head = imagines_state(env, policy)
    st = _imagined_states(policy, start_states, reckoner, S, head)
    st = None if st is None else np.repeat(st, G, axis=0)
    n = len(frames)
    first = dist.rank * n  # global index of this rank's first rollout: its world-model noise is seeded by it
    images, tokens, logps, traj, states = [], [], [], [], []

    def act(obs: np.ndarray, st: np.ndarray | None, alive: np.ndarray) -> np.ndarray:
        skip_draws(policy, generator, first)  # the rollouts of lower ranks
        chunks, tok, _ = policy.sample(obs, instruction, temperature=cfg.temperature, generator=generator, states=st)
        skip_draws(policy, generator, n * dist.world_size - first - n)  # ... and of higher ranks
        # the per-token log-probs of exactly what was drawn, at the sampling temperature (the PPO "old" policy)
        lp = policy.token_log_probs(obs, instruction, tok, temperature=cfg.temperature, states=st)
        images.append(obs[alive])
        if st is not None:
            states.append(st[alive])
        tokens.append(tok[alive].cpu())
        logps.append(lp[alive].cpu())
        traj.append(alive)
        return chunks.cpu().numpy()

    out = play(env, act, frames, instruction, cfg.horizon_chunks, cfg.success_threshold, states=st, head=head,
               reckoner=reckoner, reset_seed=env.seed + first if first else None, any_alive=dist.any)
    return Rollouts(
        images=np.concatenate(images), tokens=torch.cat(tokens), old_logp=torch.cat(logps), traj=np.concatenate(traj),
        success=out.success.astype(np.float32), group=np.repeat(np.arange(S), G), chunks_played=out.chunks_played,
        final_frames=out.final_frames, states=np.concatenate(states) if states else None, reward_max=out.reward_max,
    )


def imagines_state(env, policy) -> bool:
    """Whether the world model's state head imagines exactly the state input of ``policy`` (same features, same
    order): then the policy's state in imagination comes from it, otherwise from dead reckoning."""
    features = tuple(getattr(policy, "state_features", ()) or ())
    return bool(features) and tuple(getattr(env, "state_features", ())) == features and env.model.state_net is not None


def _imagined_states(policy, start_states: np.ndarray | None, reckoner, n: int, head: bool = False) -> np.ndarray | None:
    """The start states a state-input policy needs (checked), None for an image-only policy."""
    features = tuple(getattr(policy, "state_features", ()) or ())
    if not features:
        return None
    if start_states is None or (reckoner is None and not head):
        raise ValueError(f"grpo: this policy takes the robot state {list(features)}; imagination needs the start frames' "
                         "states and a world model whose state head imagines them, or a state reckoner (learning.rl.imagined_state)")
    st = np.asarray(start_states, np.float32)
    if st.shape != (n, len(features)):
        raise ValueError(f"grpo: start states of shape {st.shape} for {n} start frames and state {list(features)}")
    return st


def grpo_update(policy, optimizer, ro: Rollouts, instruction: str, cfg: GRPOConfig, ref_policy=None,
                generator: np.random.Generator | None = None, dist: Dist | None = None) -> dict[str, float]:
    """Group-relative advantages from ``ro`` and ``cfg.epochs`` passes of the clipped token loss.
    With ``dist``, ``ro`` holds this rank's whole groups; the minibatches are drawn over the decisions of all ranks
    and the returned statistics are those of the whole step (see the module docstring and learning/rl/grpo_ranks.py)."""
    dist = dist or Dist()
    rng = generator or np.random.default_rng(cfg.seed)

    # 1. advantages: group-relative trajectory rewards; every decision takes its trajectory's, flat groups drop out
    rewards = torch.as_tensor(ro.rewards(cfg.reward)).reshape(-1, cfg.group_size)  # (S, G): whole groups on every rank
    adv_traj, informative = group_advantages(rewards, scale=cfg.reward == "success")
    adv = adv_traj.reshape(-1)[torch.as_tensor(ro.traj)]  # (N,)
    keep_traj = informative.repeat_interleave(cfg.group_size)  # (n_traj,)
    keep = keep_traj[torch.as_tensor(ro.traj)]  # (N,)
    tot = dist.all_sum([ro.success.sum(), len(ro.success), float(informative.sum()), len(informative), len(ro.traj),
                        ro.chunks_played.sum(), float(adv[keep].abs().sum()), float(keep.sum())])
    stats: dict[str, float] = {
        "imagined_success": float(tot[0] / tot[1]),
        "informative_groups": float(tot[2] / tot[3]),
        "decisions": float(tot[4]),
        "chunks_per_trajectory": float(tot[5] / tot[1]),
    }

    # 2. the batch: the kept decisions and the weight of each of their tokens in the loss (cfg.loss_norm)
    n_tokens = ro.tokens.shape[1]  # L = K * D tokens per decision
    batch = KeptDecisions.gather(ro.traj, keep.numpy(), keep_traj.numpy(), n_tokens, cfg.loss_norm,
                                 cfg.horizon_chunks * n_tokens, dist)
    if len(batch.selected) == 0:  # every group agreed: nothing to learn from this batch
        stats.update(loss=0.0, clip_fraction=0.0, approx_kl=0.0, entropy=float("nan"), updated=0.0, adv_abs_mean=0.0,
                     optimizer_steps=0.0)
        return stats

    # 3. cfg.epochs passes of minibatch PPO-clip steps (+ KL to the SFT policy when cfg.kl_coef > 0)
    policy.train()
    totals = {"loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "entropy": 0.0, "kl_ref": 0.0}
    n_mb = 0
    for _ in range(cfg.epochs):
        for mb, share, scale in batch.minibatches(rng, cfg.minibatch):
            images, tokens = ro.images[mb], ro.tokens[mb]
            st = None if ro.states is None else ro.states[mb]
            new_logp = policy.token_log_probs(images, instruction, tokens, temperature=cfg.temperature, states=st)  # (b, L)
            mask = torch.ones_like(new_logp)
            weights = (batch.token_weight[mb] * scale)[:, None].to(new_logp.device) * mask  # (b, L)
            loss, s = clipped_token_loss(new_logp, ro.old_logp[mb].to(new_logp.device), adv[mb].to(new_logp.device), mask,
                                         cfg.clip_low, cfg.clip_high, weights)
            if cfg.kl_coef > 0 and ref_policy is not None:
                with torch.no_grad():
                    ref_logp = ref_policy.token_log_probs(images, instruction, tokens, temperature=cfg.temperature, states=st)
                kl = (kl_to_reference(new_logp, ref_logp) * weights).sum()  # the same normalisation as the PG term
                loss = loss + cfg.kl_coef * kl
                totals["kl_ref"] += float(kl.detach()) * dist.world_size
            optimizer.zero_grad(set_to_none=True)
            # the ranks' partial sums add up to the minibatch's loss; gradients are rank-averaged, hence x world_size
            (loss * dist.world_size if dist.world_size > 1 else loss).backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                ent = policy.entropy(images, instruction, temperature=cfg.temperature, states=st).mean()
            totals["loss"] += float(loss.detach()) * dist.world_size  # (the sums below are divided by world_size)
            totals["clip_fraction"] += float(s["clip_fraction"]) * share
            totals["approx_kl"] += float(s["approx_kl"]) * share
            totals["entropy"] += float(ent) * share
            n_mb += 1
    policy.eval()
    summed = dist.all_sum([totals[k] for k in totals]) / dist.world_size  # shares sum to world_size per minibatch
    stats.update({k: float(v) / n_mb for k, v in zip(totals, summed)})
    stats["updated"] = 1.0
    stats["optimizer_steps"] = float(n_mb)
    stats["adv_abs_mean"] = float(tot[6] / tot[7])
    return stats


@dataclass
class GreedyProbe:
    """A fixed probe set of start frames (+ robot states) and the starting policy's greedy chunk on each, taken once
    before GRPO; ``drift`` says how far the current greedy policy (the one exported and deployed) has moved from it.
    Only the starting policy's outputs are kept, not a second model."""

    frames: np.ndarray  # (P, H, W, 3) uint8
    states: np.ndarray | None  # (P, S) for a state-input policy
    tokens: torch.Tensor  # (P, N) the starting policy's greedy tokens (CPU)
    chunks: torch.Tensor  # (P, K, D) ... and their actions, in [-1, 1]

    @classmethod
    @torch.no_grad()
    def take(cls, policy, frames: np.ndarray, instruction: str, states: np.ndarray | None = None) -> "GreedyProbe":
        chunks, tokens, _ = policy.sample(frames, instruction, temperature=0.0, states=states)  # greedy: draws nothing
        return cls(frames, states, tokens.cpu(), chunks.cpu())

    @torch.no_grad()
    def drift(self, policy, instruction: str) -> dict[str, float]:
        """-> probe/greedy_token_change: share of the probe's greedy action tokens that differ from the starting
        policy's; probe/greedy_action_delta: mean |a - a_start| over the probe's greedy chunks (action units)."""
        chunks, tokens, _ = policy.sample(self.frames, instruction, temperature=0.0, states=self.states)
        return {"probe/greedy_token_change": float((tokens.cpu() != self.tokens).float().mean()),
                "probe/greedy_action_delta": float((chunks.cpu() - self.chunks).abs().mean())}


def probe_indices(n_starts: int, n_probe: int) -> np.ndarray:
    """Up to ``n_probe`` start indices spread evenly over ``n_starts`` (drawn without the run's generator, so the
    probe does not change the run's start frames or samples)."""
    return np.unique(np.linspace(0, n_starts - 1, min(n_probe, n_starts)).round().astype(np.int64))


@dataclass
class GRPOResult:
    policy_folder: Path
    history: list[dict[str, float]]


def train_grpo(policy, env, start_frames: np.ndarray, instruction: str, cfg: GRPOConfig, out: Path,
               on_step: Callable[[int, dict[str, float]], None] | None = None, dist: Dist | None = None,
               start_states: np.ndarray | None = None, reckoner=None,
               rollouts_fn: Callable[[Any, np.ndarray, torch.Generator], Rollouts] | None = None) -> GRPOResult:
    """Run cfg.steps GRPO updates of ``policy`` (modified in place) in ``env``; save it to ``out/policy``.
    ``rollouts_fn(policy, picked start indices, generator)``: where the trajectories come from instead of imagining
    them in ``env`` (the oracle control plays them on the simulated robot: `learning.rl.oracle`).

    start_frames (E, H, W, 3) uint8: real first frames; each step draws cfg.starts_per_step of them.
    start_states (E, S), reckoner: the robot state recorded with each start frame and how it advances in
    imagination, for a policy with a state input (see `imagine`).
    ``dist`` (default: the context `init_distributed` set up): under torchrun each rank imagines
    ``starts_per_step / world_size`` groups, the policy is sharded by FSDP2 and only rank 0 writes.
    """
    dist = dist or current()
    if len(start_frames) == 0:
        raise ValueError("grpo: no start frames (the store has no episodes to start imagination from)")
    rows = dist.rows(cfg.starts_per_step, "grpo.starts_per_step")  # whole groups per rank
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(cfg.seed)  # the policy samples on its device
    rng = np.random.default_rng(cfg.seed)
    ref_policy = copy.deepcopy(policy).eval() if cfg.kl_coef > 0 else None
    wrap_policy(dist, policy)  # FSDP2 under torchrun; nothing on one process
    if ref_policy is not None:
        wrap_policy(dist, ref_policy)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    policy.eval()
    probe = None
    if cfg.probe_starts > 0:  # after wrapping: the same (e.g. bf16) forward as every later measurement; every rank
        idx = probe_indices(len(start_frames), cfg.probe_starts)  # measures the same probe set, in lockstep
        probe = GreedyProbe.take(policy, start_frames[idx], instruction,
                                 None if start_states is None else np.asarray(start_states)[idx])
    history = []
    log_path = out / "grpo_log.jsonl"
    with open(log_path, "w") if dist.is_main else open(os.devnull, "w") as logf:  # rank 0 writes
        for step in range(cfg.steps):
            t0 = time.perf_counter()
            pick = rng.choice(len(start_frames), size=cfg.starts_per_step, replace=len(start_frames) < cfg.starts_per_step)
            st = None if start_states is None else np.asarray(start_states)[pick][rows]
            if rollouts_fn is not None:
                ro = rollouts_fn(policy, pick[rows], gen)
            else:
                ro = imagine(policy, env, start_frames[pick][rows], instruction, cfg, gen, dist, st, reckoner)
            t1 = time.perf_counter()
            stats = grpo_update(policy, optimizer, ro, instruction, cfg, ref_policy, rng, dist)
            stats.update(step=step, imagine_s=t1 - t0, update_s=time.perf_counter() - t1)
            if probe is not None:
                stats.update(probe.drift(policy, instruction))
            history.append(stats)
            logf.write(json.dumps(stats) + "\n")
            logf.flush()
            log.info("grpo step %d: imagined success %.2f, informative %.2f, clip %.3f, kl %.4f, entropy %.3f, "
                     "greedy tokens changed %.3f (|da| %.4f)",
                     step, stats["imagined_success"], stats["informative_groups"], stats["clip_fraction"], stats["approx_kl"],
                     stats["entropy"] if not math.isnan(stats["entropy"]) else float("nan"),
                     stats.get("probe/greedy_token_change", float("nan")),
                     stats.get("probe/greedy_action_delta", float("nan")))
            if on_step:
                on_step(step, stats)
    folder = out / "policy"
    dist.save_pretrained(policy, folder)  # every rank (gathers a sharded policy); rank 0 writes
    if dist.is_main:
        (out / "grpo_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    dist.barrier()
    return GRPOResult(folder, history)


def imagination_states(policy, store, indices, frames: Sequence[int] | None = None) -> tuple[np.ndarray | None, Any]:
    """(start states, DeadReckoning) from ``store``'s episodes (at ``frames``, default the first) for a state-input
    policy; (None, None) otherwise."""
    features = tuple(getattr(policy, "state_features", ()) or ())
    if not features:
        return None, None
    from learning.rl.imagined_state import DeadReckoning, start_states

    return start_states(store, indices, features, frames), DeadReckoning.fitted(features, store, indices)


STARTS = ("first", "keyframes")


def imagination_starts(policy, sources: Sequence[tuple[Any, Sequence[int]]], starts: str = "first",
                       stride: int | None = None) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Where imagined rollouts start: (frames (E, H, W, 3), robot states (E, S) or None, reckoner) from the
    episodes of each (store, indices) source. ``starts="first"``: each episode's first frame; ``"keyframes"``: every
    ``stride``-th frame (default the policy's chunk length; `learning.rl.imagined_state.keyframes`). The
    dead-reckoner's gain and closed-gripper opening are fitted on the first source."""
    if starts not in STARTS:
        raise ValueError(f"starts: {starts!r} is not one of {STARTS}")
    from learning.rl.imagined_state import keyframes

    frames, states, reckoner = [], [], None
    for store, indices in sources:
        points = [(int(i), 0) for i in indices] if starts == "first" else keyframes(store, indices, stride or policy.chunk_length)
        if not points:
            continue
        eps, fr = zip(*points)
        decoded = {i: store.frames(i) for i in dict.fromkeys(eps)}  # each episode's video decoded once
        frames += [decoded[i][f] for i, f in points]
        st, rk = imagination_states(policy, store, eps, fr)
        if st is not None:
            states.append(st)
            reckoner = reckoner or rk
    if not frames:
        raise ValueError("imagination starts: no episode to start from")
    return np.stack(frames), (np.concatenate(states) if states else None), reckoner


def main(cfg, mode: str | None = None) -> int:
    """`wvl grpo`: GRPO in imagination from a policy folder, in a world model checkpoint, from a store's first frames."""
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    with distributed_session(c.get("dist")) as dist:  # torchrun: join the job
        return _run(c, dist)


def _run(c: dict[str, Any], dist: Dist) -> int:
    from learning.data.store import EpisodeStore
    from learning.policy import load_policy
    from learning.world_model.env import WorldModelEnv
    from robot.console import print_table

    g = GRPOConfig.from_dict(c["grpo"])
    store = EpisodeStore(c["store"], create=False)
    indices = store.indices(outcomes=tuple(c["start_outcomes"]) if c["start_outcomes"] else None)
    if not indices:
        raise ValueError(f"store: no episodes with outcomes {c['start_outcomes']} in {store.root} to start imagination from")
    policy = load_policy(c["policy"], device=str(dist.device) if dist.initialized else None)
    instruction = c["instruction"] or policy.default_instruction
    collect = None
    if c["rollouts"] == "simulator":  # the oracle control: the same GRPO, trajectories and rewards from the simulator
        if c["starts"] != "first" or dist.world_size > 1:
            raise ValueError("rollouts=simulator: starts from the episodes' first frames (their seeds), on one process "
                             "(its simulators are `workers` processes, not torchrun ranks)")
        from learning.rl.oracle import grpo_in_simulator

        res, collect = grpo_in_simulator(policy, store, indices, instruction, g, c["out"], {"kind": "maniskill", **(c.get("sim") or {})},
                                         c["task"], workers=int(c["workers"]))
        n_starts = len(indices)
    elif c["rollouts"] == "imagined":
        if not c.get("world_model"):
            raise ValueError("world_model: give the world model checkpoint GRPO imagines in (or rollouts=simulator)")
        start_frames, start_states, reckoner = imagination_starts(policy, [(store, indices)], c["starts"])
        env = WorldModelEnv(c["world_model"], num_inference_steps=g.num_inference_steps, reward_threshold=g.success_threshold,
                            horizon=g.horizon_chunks * policy.chunk_length, seed=g.seed, device=dist.device)
        res = train_grpo(policy, env, start_frames, instruction, g, Path(c["out"]), dist=dist, start_states=start_states,
                         reckoner=reckoner)
        n_starts = len(start_frames)
    else:
        raise ValueError(f"rollouts: {c['rollouts']!r} is not 'imagined' or 'simulator'")
    if not dist.is_main:
        return 0
    keys = ["step", "imagined_success", "informative_groups", "loss", "clip_fraction", "approx_kl", "entropy",
            "probe/greedy_token_change", "probe/greedy_action_delta"]
    keys = [k for k in keys if all(k in h for h in res.history)]  # (no probe columns with grpo.probe_starts=0)
    print_table(f"GRPO in {'the simulator' if collect else 'imagination'} ({n_starts} start frames; probe: the greedy policy vs the starting one)",
                keys, [[h[k] if k != "step" else int(h[k]) for k in keys] for h in res.history])
    if collect is not None:
        print(f"simulator: {collect.episodes} episodes, {collect.sim_steps} control steps")
    print(f"policy: {res.policy_folder}")
    return 0
