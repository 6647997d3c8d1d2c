"""Pure maths of the world model: the flow-matching parameterisation, the joint loss, the sampler, PSNR/SSIM."""

import numpy as np
import pytest
import torch

from learning.eval.video_metrics import PSNR_CAP, psnr, ssim
from learning.world_model.flow import (euler_step, euler_timesteps, flow_target, joint_loss, noisy_latents, reward_loss,
                                       reward_weight)


def test_flow_parameterisation_recovers_x0_and_noise():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 5, 5, generator=g), torch.randn(3, 4, 2, 5, 5, generator=g)
    t = torch.tensor([0.0, 0.3, 1.0])
    xt = noisy_latents(x0, eps, t)
    v = flow_target(x0, eps)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[2], eps[2])
    # x0 = x_t - t v (Cosmos' c_skip / c_out with c_skip = 1 - t, c_out = -t on the EDM-scaled latents)
    assert torch.allclose(xt - t.view(-1, 1, 1, 1, 1) * v, x0, atol=1e-6)


def test_euler_with_the_exact_velocity_lands_on_x0_in_one_step():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    ts = euler_timesteps(1)
    assert ts.tolist() == [1.0, 0.0]
    x = euler_step(eps, flow_target(x0, eps), ts[0], ts[1])
    assert torch.allclose(x, x0)
    shifted = euler_timesteps(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and bool((shifted[:-1] > shifted[1:]).all())
    assert shifted[2] > 0.5  # shift > 1 spends more steps at high noise
    with pytest.raises(ValueError, match="num_inference_steps"):
        euler_timesteps(0)


def test_joint_loss_is_flow_plus_noise_weighted_reward():
    v_pred, v_tgt = torch.zeros(2, 1, 1, 1, 1), torch.ones(2, 1, 1, 1, 1)
    logits, rewards = torch.zeros(2, 3), torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    t = torch.tensor([0.0, 1.0])
    loss, parts = joint_loss(v_pred, v_tgt, logits, rewards, t, lambda0=2.0)
    bce = np.log(2.0)  # BCE of logit 0 whatever the label
    assert torch.allclose(reward_weight(t, 2.0), torch.tensor([2.0, 0.0]))
    assert torch.allclose(reward_loss(logits, rewards), torch.full((2,), bce))
    # L = L_flow + mean_b lambda(t_b) * BCE_b = 1 + (2 * bce + 0 * bce) / 2
    assert loss.item() == pytest.approx(1.0 + bce, rel=1e-5)
    assert parts["flow"].item() == pytest.approx(1.0)
    loss_no_head, parts2 = joint_loss(v_pred, v_tgt, None, rewards, t, lambda0=2.0)
    assert loss_no_head.item() == pytest.approx(1.0) and set(parts2) == {"flow"}


def test_psnr_and_ssim_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.all(psnr(a, a) == PSNR_CAP)
    assert np.allclose(ssim(a, a), 1.0)
    b = a.astype(np.int16)
    b[..., 0] += np.where(b[..., 0] < 128, 10, -10).astype(np.int16)  # MSE = 100/3 exactly
    b = b.astype(np.uint8)
    assert np.allclose(psnr(b, a), 10 * np.log10(255**2 / (100 / 3)))
    noisy = np.clip(a.astype(int) + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    s = ssim(noisy, a)
    assert s.shape == (3,) and np.all(s < 0.9) and np.all(ssim(b, a) > s)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, a[:, :16])
