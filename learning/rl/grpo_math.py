"""GRPO's maths as small pure functions (each testable alone). Symbols follow the GRPO / DAPO papers.

- ``group_advantages``: A_i = (R_i - mean_g R) / (std_g R + eps) within each group of G rollouts that share
  a start state; groups whose members all got the same reward carry no signal and are masked out.
- ``clipped_token_loss``: the PPO objective per action token with an asymmetric clip (DAPO's clip-higher,
  SimpleVLA-RL: eps_low 0.2, eps_high 0.28), averaged over all tokens of the batch (token-level mean).
- ``approx_kl``: the k3 estimator E[(r - 1) - log r] of KL(old || new), for logging.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards (N_groups, G) -> (advantages (N_groups, G), informative (N_groups,) bool).

    Uses the population std of the group (as SimpleVLA-RL / TRL do). Non-informative groups get advantage 0.
    """
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    informative = (rewards.max(dim=1).values - rewards.min(dim=1).values) > 0
    adv = (rewards - mean) / (std + eps)
    adv = torch.where(informative[:, None], adv, torch.zeros_like(adv))
    return adv, informative


def clipped_token_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip on tokens.

    new_logp, old_logp: (B, L) log-probabilities of the sampled tokens under the current / rollout policy.
    advantages: (B,) one advantage per decision (every token of a chunk shares its trajectory's advantage).
    mask: (B, L) 1 for tokens that count (padding/finished steps 0).
    Returns the loss (scalar, to minimise) and stats: clip fraction, approx KL, ratio mean.
    """
    ratio = torch.exp(new_logp - old_logp)  # (B, L)
    adv = advantages[:, None].expand_as(ratio)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    n = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / n
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
