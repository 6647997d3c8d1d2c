import math

import torch

from learning.rl.grpo_math import LOSS_NORMS, approx_kl, clipped_token_loss, group_advantages, trajectory_token_weights


def test_group_advantages_on_a_hand_computed_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    adv, informative = group_advantages(rewards)
    assert informative.tolist() == [True, False, True]
    torch.testing.assert_close(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert torch.all(adv[1] == 0)  # all members agree: no signal, dropped
    std = math.sqrt(0.25 * 0.75)  # population std of [0, 0, 0, 1]
    torch.testing.assert_close(adv[2], torch.tensor([-0.25, -0.25, -0.25, 0.75]) / std, atol=1e-4, rtol=0)


def test_unscaled_advantages_keep_a_continuous_reward_s_small_differences_small():
    rewards = torch.tensor([[0.010, 0.012, 0.011, 0.011], [0.9, 0.1, 0.5, 0.5]])
    adv, informative = group_advantages(rewards, scale=False)
    assert informative.tolist() == [True, True]
    torch.testing.assert_close(adv, rewards - rewards.mean(1, keepdim=True))
    scaled, _ = group_advantages(rewards)
    assert scaled[0].abs().max() > 1.0 > 100 * adv[0].abs().max()  # the std would make 0.001 a full advantage


def test_clipped_loss_at_ratio_one_is_minus_the_mean_advantage_and_masks():
    logp = torch.log(torch.full((2, 3), 0.5))
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, stats = clipped_token_loss(logp, logp, adv, mask)
    assert math.isclose(loss.item(), -(3 * 1.0 + 1 * -2.0) / 4, rel_tol=1e-6)
    assert stats["clip_fraction"].item() == 0.0 and abs(stats["approx_kl"].item()) < 1e-7


def test_clipping_is_asymmetric_and_stops_the_gradient_outside_the_trust_region():
    old = torch.zeros(1, 2)
    # token 0 pushed up by 25% (inside 1.28), token 1 by 40% (outside): positive advantage
    new = torch.log(torch.tensor([[1.25, 1.40]])).requires_grad_(True)
    loss, stats = clipped_token_loss(new, old, torch.tensor([1.0]), torch.ones(1, 2))
    loss.backward()
    assert new.grad[0, 0] < 0 and new.grad[0, 1] == 0  # only the unclipped token still gets pushed up
    assert stats["clip_fraction"].item() == 0.5
    # with a negative advantage the low side clips at 0.8
    new2 = torch.log(torch.tensor([[0.85, 0.75]])).requires_grad_(True)
    loss2, _ = clipped_token_loss(new2, old, torch.tensor([-1.0]), torch.ones(1, 2))
    loss2.backward()
    assert new2.grad[0, 0] > 0 and new2.grad[0, 1] == 0


def test_approx_kl_is_non_negative_and_zero_at_equality():
    a = torch.randn(100)
    assert torch.all(approx_kl(a, a) == 0)
    assert torch.all(approx_kl(a + torch.randn(100), a) >= 0)


def test_the_three_loss_normalisations_on_a_short_success_and_a_long_failure():
    """Two trajectories at ratio 1 (per-token loss -A): a success of 1 token (A = +1) and a failure of 3 (A = -1),
    T_max = 3. Per-token losses: [-1 | +1, +1, +1].
    token:      (-1 + 3) / 4               = 0.5    d/dlogp = [-1/4 | 1/4, 1/4, 1/4]  (the failure out-votes)
    trajectory: (-1/1 + 3/3) / 2            = 0      d/dlogp = [-1/2 | 1/6, 1/6, 1/6]  (each rollout weighs the same)
    constant:   (-1/3 + 3/3) / 2            = 1/3    d/dlogp = [-1/6 | 1/6, 1/6, 1/6]  (every token weighs the same)
    """
    traj = torch.tensor([0, 1, 1, 1])  # 4 decisions of 1 token each
    lengths = torch.tensor([1, 3])
    adv = torch.tensor([1.0, -1.0, -1.0, -1.0])
    mask = torch.ones(4, 1)
    expected = {"token": (0.5, [-1 / 4, 1 / 4, 1 / 4, 1 / 4]),
                "trajectory": (0.0, [-1 / 2, 1 / 6, 1 / 6, 1 / 6]),
                "constant": (1 / 3, [-1 / 6, 1 / 6, 1 / 6, 1 / 6])}
    assert set(LOSS_NORMS) == set(expected)
    for norm, (value, grad) in expected.items():
        weights = trajectory_token_weights(LOSS_NORMS[norm](lengths, max_tokens=3))[traj][:, None]  # (4, 1)
        logp = torch.log(torch.full((4, 1), 0.5)).requires_grad_(True)
        loss, _ = clipped_token_loss(logp, logp.detach(), adv, mask, weights=weights)
        loss.backward()
        assert math.isclose(loss.item(), value, abs_tol=1e-6), norm
        torch.testing.assert_close(logp.grad[:, 0], torch.tensor(grad), atol=1e-6, rtol=0, msg=norm)
    # the token normalisation is the default token mean
    default, _ = clipped_token_loss(torch.zeros(4, 1), torch.zeros(4, 1), adv, mask)
    assert math.isclose(default.item(), 0.5, abs_tol=1e-6)
