"""GRPO's maths as small pure functions (each testable alone). Symbols follow the GRPO / DAPO papers.

- ``group_advantages``: A_i = (R_i - mean_g R) / (std_g R + eps) within each group of G rollouts that share
  a start state; groups whose members all got the same reward carry no signal and are masked out.
- ``clipped_token_loss``: the PPO objective per action token with an asymmetric clip (DAPO's clip-higher,
  SimpleVLA-RL: eps_low 0.2, eps_high 0.28), summed with per-token weights (default: the token-level mean).
- the loss normalisations (``LOSS_NORMS``, config ``grpo.loss_norm``): every one is a mean over the n
  trajectories of each trajectory's token sum over a divisor D_i,
      L = 1/n * sum_i 1/D_i * sum_{t in traj i} l_t,
  and they differ only in D_i (T_i = the tokens trajectory i played, T_max = the most it can play):
  ``token`` D_i = mean_j T_j (the mean over all tokens of the batch: a trajectory weighs by its length),
  ``trajectory`` D_i = T_i (each trajectory's own token mean: every rollout weighs the same),
  ``constant`` D_i = T_max (Dr. GRPO: token sums over a fixed constant; every token weighs the same).
  ``trajectory_token_weights`` turns the divisors into the weight 1 / (n D_i) of each token of trajectory i.
- ``approx_kl``: the k3 estimator E[(r - 1) - log r] of KL(old || new), for logging.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards (N_groups, G) -> (advantages (N_groups, G), informative (N_groups,) bool).

    Uses the population std of the group (as SimpleVLA-RL / TRL do); ``scale=False`` leaves it out (Dr. GRPO), which
    a continuous reward needs: a group whose rewards differ by 0.001 would otherwise get advantages of +-1.
    Non-informative groups get advantage 0.
    """
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    informative = (rewards.max(dim=1).values - rewards.min(dim=1).values) > 0
    adv = (rewards - mean) / (std + eps) if scale else rewards - mean
    adv = torch.where(informative[:, None], adv, torch.zeros_like(adv))
    return adv, informative


def clipped_token_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip on tokens.

    new_logp, old_logp: (B, L) log-probabilities of the sampled tokens under the current / rollout policy.
    advantages: (B,) one advantage per decision (every token of a chunk shares its trajectory's advantage).
    mask: (B, L) 1 for tokens that count (padding/finished steps 0).
    weights: (B, L) weight of each token's loss (see ``trajectory_token_weights``); None = mask / mask.sum(),
    the token mean.
    Returns the loss sum(weights * per-token loss) (scalar, to minimise) and stats (token means over ``mask``,
    whatever the weights): clip fraction, approx KL, ratio mean.
    """
    ratio = torch.exp(new_logp - old_logp)  # (B, L)
    adv = advantages[:, None].expand_as(ratio)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    n = mask.sum().clamp(min=1)
    if weights is None:
        weights = mask / n
    loss = (per_token * weights * mask).sum()
    with torch.no_grad():
        was_clipped = ((ratio < 1.0 - clip_low) & (adv < 0)) | ((ratio > 1.0 + clip_high) & (adv > 0))
        stats = {
            "clip_fraction": (was_clipped.float() * mask).sum() / n,
            "approx_kl": (approx_kl(new_logp, old_logp) * mask).sum() / n,
            "ratio_mean": (ratio * mask).sum() / n,
        }
    return loss, stats


def approx_kl(new_logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(old || new): (r - 1) - log r with r = p_new / p_old (>= 0, unbiased)."""
    log_ratio = new_logp - old_logp
    return torch.expm1(log_ratio) - log_ratio


def kl_to_reference(new_logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(new || ref) for the optional KL penalty (GRPO paper, eq. 4)."""
    log_ratio = ref_logp - new_logp
    return torch.expm1(log_ratio) - log_ratio


def token_mean_divisor(lengths: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """D_i = mean_j T_j for every i: the mean over all tokens of the batch. A trajectory's weight grows with its
    length, so failures (which play every chunk) out-vote successes (which stop early)."""
    return lengths.float().mean().expand(lengths.shape)


def trajectory_mean_divisor(lengths: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """D_i = T_i: the mean over each trajectory's tokens, then over trajectories; every rollout weighs the same."""
    return lengths.float()


def constant_divisor(lengths: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """D_i = T_max (Dr. GRPO): each trajectory's token sum over the most tokens a trajectory can have; every token
    weighs the same, so a long trajectory still weighs more than a short one, but no length biases the gradient
    of a single token."""
    return torch.full(lengths.shape, float(max_tokens))


LOSS_NORMS = {"token": token_mean_divisor, "trajectory": trajectory_mean_divisor, "constant": constant_divisor}


def trajectory_token_weights(divisors: torch.Tensor) -> torch.Tensor:
    """divisors (n,) D_i -> (n,) the weight 1 / (n D_i) of each token of trajectory i in
    L = 1/n * sum_i 1/D_i * sum_{t in i} l_t."""
    return 1.0 / (len(divisors) * divisors)
