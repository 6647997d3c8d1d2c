"""What makes a GRPO step on several ranks the same step as on one process (learning/rl/grpo.py's docstring says
what is shared). Everything here is the identity, or close to it, on one process.

- `skip_draws`: a rank's policy draws exactly the random numbers a 1-process run draws for its rollouts;
- `decision_order`: where each of a rank's decisions stands in the 1-process run's list;
- `KeptDecisions`: the decisions that train (those of informative groups), the weight of each of their tokens in the
  batch's loss, and the 1-process run's minibatches, each cut down to the rows this rank holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from learning.distributed import Dist
from learning.rl.grpo_math import LOSS_NORMS, trajectory_token_weights


def skip_draws(policy, generator: torch.Generator, rollouts: int) -> None:
    """Advance ``generator`` past the sampling draws of ``rollouts`` rollouts of other ranks. The compact VLA draws one
    uniform per action token and bin per rollout, and torch fills a tensor from its CPU generator in order, so a rank
    that skips the rows before its own draws exactly what a 1-process run draws for them (other policies and CUDA
    generators: still a fresh stream per rank, just not the 1-process one)."""
    if rollouts:
        torch.rand((rollouts, policy.chunk_length * policy.action_dim, policy.action_tokenizer.n_bins),
                   generator=generator, device=generator.device)


def decision_order(traj: np.ndarray, n_traj: int, dist: Dist) -> tuple[np.ndarray, int]:
    """Where this rank's decisions (``traj``: the trajectory of each) stand in the 1-process run's decision list (chunk
    by chunk, trajectories in order within a chunk), and how many decisions there are in all: -> (position of each
    local decision (N,), N_global). One all-gather of (chunk, trajectory) pairs; on one process the identity."""
    chunk = np.cumsum(np.r_[0, np.diff(traj) <= 0])  # a chunk's alive trajectories are listed in increasing order
    keys, counts = dist.all_gather_rows(np.stack([chunk, traj + dist.rank * n_traj], 1))  # (N_global, 2)
    pos = np.empty(len(keys), np.int64)
    pos[np.lexsort((keys[:, 1], keys[:, 0]))] = np.arange(len(keys))
    mine = int(counts[:dist.rank].sum())
    return pos[mine:mine + len(traj)], len(keys)


@dataclass
class KeptDecisions:
    selected: np.ndarray       # global ids (1-process numbering) of the decisions that train
    local_of: np.ndarray       # global id -> this rank's row, -1 for another rank's
    token_weight: torch.Tensor  # (N,) the weight of each token of a local decision in the batch's loss
    dist: Dist

    @classmethod
    def gather(cls, traj: np.ndarray, keep: np.ndarray, keep_traj: np.ndarray, n_tokens: int, loss_norm: str,
               max_tokens: int, dist: Dist) -> "KeptDecisions":
        """``traj`` (N,) the trajectory of each local decision, ``keep`` (N,) whether it trains, ``keep_traj``
        (n_traj,) whether each trajectory does; ``n_tokens`` per decision, ``max_tokens`` per trajectory.

        The loss is L = 1/n * sum_i 1/D_i * sum_{t in traj i} l_t over the n kept trajectories (grpo_math
        LOSS_NORMS: D_i per ``loss_norm``). Trajectories are whole on a rank, but the token mean's D_i is a mean over
        all of them: the kept lengths of every rank are gathered."""
        pos, n_global = decision_order(traj, len(keep_traj), dist)
        kept = np.zeros(n_global, bool)
        kept[pos[keep]] = True
        selected = np.flatnonzero(dist.all_sum(kept) > 0)
        local_of = np.full(n_global, -1)
        local_of[pos] = np.arange(len(pos))
        lengths = np.bincount(traj, minlength=len(keep_traj))[keep_traj] * n_tokens  # (n_kept,) tokens played
        all_lengths, counts = dist.all_gather_rows(lengths[:, None])  # (n_kept_global, 1)
        divisors = LOSS_NORMS[loss_norm](torch.as_tensor(all_lengths[:, 0]), max_tokens)
        mine = int(counts[:dist.rank].sum())
        traj_weight = torch.zeros(len(keep_traj))
        traj_weight[torch.as_tensor(keep_traj)] = trajectory_token_weights(divisors)[mine:mine + len(lengths)].float()
        return cls(selected, local_of, traj_weight[torch.as_tensor(traj)], dist)

    def minibatches(self, rng: np.random.Generator, size: int) -> Iterator[tuple[np.ndarray, float, float]]:
        """One epoch: about-equal minibatches of at most ``size`` kept decisions in a random order (70 decisions with
        size 64 are 35 + 35, not 64 + 6; fewer than ``size`` are one minibatch). Yields (this rank's rows, its share of
        the minibatch for averaging statistics (`Dist.share`), the scale that makes the minibatch's loss estimate the
        whole batch's: kept decisions / minibatch size, 0 for a rank holding none of it)."""
        order = rng.permutation(self.selected)
        for mb_global in np.array_split(order, math.ceil(len(order) / size)):
            rows = self.local_of[mb_global]
            rows = rows[rows >= 0]
            share = self.dist.share(len(rows), len(mb_global))
            if len(rows) == 0:
                # A rank holding none still runs the (sharded) network on one row, weighted 0: every rank takes part
                # in every all-gather and gradient reduction.
                yield np.zeros(1, np.int64), share, 0.0
            else:
                yield rows, share, len(self.selected) / len(mb_global)
