import numpy as np
import torch

from learning.rl.grpo import GRPOConfig, Rollouts, grpo_update
from tests.policy.conftest import tiny_compact


def _rollouts(policy, success, seed=0):
    rng = np.random.default_rng(seed)
    G = len(success)
    images = rng.integers(0, 255, (G, 16, 16, 3), dtype=np.uint8)
    instr = policy.default_instruction
    with torch.no_grad():
        _, tokens, _ = policy.sample(images, instr, temperature=1.6, generator=torch.Generator().manual_seed(seed))
        old = policy.token_log_probs(images, instr, tokens, temperature=1.6)
    return Rollouts(images=images, tokens=tokens, old_logp=old, traj=np.arange(G), success=np.asarray(success, np.float32),
                    group=np.zeros(G, np.int64), chunks_played=np.ones(G, np.int64), final_frames=images), instr


def test_a_grpo_step_raises_the_log_prob_of_the_advantaged_chunk():
    torch.manual_seed(0)
    policy = tiny_compact()
    ro, instr = _rollouts(policy, [1, 0, 0, 0])
    cfg = GRPOConfig(group_size=4, lr=3e-4, epochs=4, minibatch=4)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    stats = grpo_update(policy, opt, ro, instr, cfg)
    with torch.no_grad():
        new = policy.log_prob(ro.images, instr, ro.tokens, temperature=1.6)
    old = ro.old_logp.sum(-1)
    assert new[0] > old[0]  # the successful chunk became more likely
    assert torch.all(new[1:] < old[1:])  # the failed ones less likely
    assert stats["updated"] == 1.0 and stats["informative_groups"] == 1.0 and stats["imagined_success"] == 0.25
    assert 0.0 <= stats["clip_fraction"] <= 1.0 and stats["entropy"] > 0


def test_groups_that_all_agree_change_nothing():
    policy = tiny_compact()
    before = [p.detach().clone() for p in policy.parameters()]
    ro, instr = _rollouts(policy, [1, 1, 1, 1])
    cfg = GRPOConfig(group_size=4)
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), ro, instr, cfg)
    assert stats["updated"] == 0.0 and stats["informative_groups"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_config_errors_name_the_field():
    import pytest

    with pytest.raises(ValueError, match="grpo.group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="unknown keys \\['groupsize'\\]"):
        GRPOConfig.from_dict({"groupsize": 8})
