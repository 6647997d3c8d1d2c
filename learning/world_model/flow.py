"""The flow-matching maths of the world model, as small pure functions (each tested alone).

Parameterisation (the one Cosmos-Predict2 uses, so the 2B weights fit): with clean latents x0, Gaussian noise
eps and noise level t in [0, 1] (t = sigma / (1 + sigma) in the pipeline's EDM terms),

    x_t = (1 - t) * x0 + t * eps          (rectified flow; t = 1 is pure noise)
    v   = eps - x0                        (the denoiser predicts this velocity)
    x0  = x_t - t * v                     (the pipeline's c_skip * x + c_out * v with c_skip = 1 - t, c_out = -t,
                                           applied to the EDM-scaled latents)

Training loss (DESIGN.md section 2, the paper's joint objective):

    L = L_flow + lambda(t) * L_reward + mu * L_state
    L_flow   = mean over predicted latents of (v_hat - v)^2          (velocity models: the 2B Cosmos)
             = mean over predicted latents of (x0_hat - x0)^2        (x0 models: the tiny patch-latent model;
                                                                      = (v_hat - v)^2 weighted by t^2)
    L_reward = mean over the K predicted frames of BCE(r_hat_k, r_k)        (r_k in {0, 1}: per-frame success)
    lambda(t) = lambda_0 * (1 - t)
    L_state  = mean over the K frames and S features of (d_hat_k - d_k)^2   (d_k = robot state of frame k minus
                                                                      that of the conditioning frame, model.STATE_UNITS)

Prediction target. The 2B Cosmos predicts v directly. The tiny patch-latent model predicts x0 and the sampler
converts, v_hat = (x_t - x0_hat) / max(t, 0.05) (JiT, Li & He 2025, "Back to Basics: Let Denoising Generative
Models Denoise"): a 16x16-px patch of 2 frames is a 1536-d token squeezed through a 128-d transformer; noise
fills all 1536 dimensions, so v = eps - x0 cannot pass the bottleneck (the v-model's flow loss stalled near
Var(eps) = 1 and its samples were noise: PSNR 12 dB, measured), while clean frames lie on a low-dimensional
manifold that does. Its loss is taken in x0 space (a t^2-weighted v-loss): the unweighted v-loss of an
x0-model puts up to 400x weight on nearly clean inputs, where actions do not matter, and a toy model trained
with it did not learn to follow actions in 400 steps, while the x0 loss did (tests/world_model/test_model.py).

lambda falls linearly with the noise level: at t -> 1 the denoiser's hidden states hold only the conditioning
frame and the actions, so asking them for the outcome of the *generated* frames is mostly noise in the gradient;
at t -> 0 they see the frames whose success is labelled. At inference the reward is read at the last Euler step
(t = 1/N for N uniform steps, lambda = lambda_0 (1 - 1/N)) or in an extra pass at t = 0 (`WorldModel.generate`). BCE instead of the paper's squared error: the head
outputs a probability that is thresholded at 0.9, and BCE keeps it calibrated near 0 and 1.

mu does not fall with the noise level: most of a chunk's state change follows from its actions, which the hidden
states hold at every t; the rest (did the gripper close on the cube, did the table stop the hand) needs the frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps; t is (B,) and broadcasts over (B, C, T, h, w)."""
    t = t.view(-1, *([1] * (x0.ndim - 1)))
    return (1.0 - t) * x0 + t * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = eps - x0 (the velocity the denoiser predicts)."""
    return noise - x0


T_MIN_DIV = 0.05  # x0-prediction: v = (x_t - x0_hat) / max(t, T_MIN_DIV), as in JiT (Li & He 2025)


def velocity_from_x0(x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The velocity implied by a clean-latent prediction: v = (x_t - x0_hat) / t (t clamped away from 0)."""
    t = t.view(-1, *([1] * (x_t.ndim - 1))).clamp_min(T_MIN_DIV)
    return (x_t - x0_hat) / t


def flow_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_flow: mean squared error over every predicted latent element (v or x0 space)."""
    return F.mse_loss(pred.float(), target.float())


def reward_weight(t: torch.Tensor, lambda0: float) -> torch.Tensor:
    """lambda(t) = lambda_0 * (1 - t), per sample (B,)."""
    return lambda0 * (1.0 - t)


def reward_loss(logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Per-sample BCE of the reward head: logits, rewards (B, K) -> (B,), mean over the K frames."""
    return F.binary_cross_entropy_with_logits(logits.float(), rewards.float(), reduction="none").mean(1)


def state_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_state: mean squared error of the predicted state changes (B, K, S) over frames and features."""
    return F.mse_loss(pred.float(), target.float())


def joint_loss(pred: torch.Tensor, target: torch.Tensor, logits: torch.Tensor | None, rewards: torch.Tensor,
               t: torch.Tensor, lambda0: float, state_pred: torch.Tensor | None = None, state_target: torch.Tensor | None = None,
               mu: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_flow + mean_b lambda(t_b) * L_reward,b + mu * L_state, with L_flow = MSE(pred, target) (v or x0, see
    above); a term whose head or target is absent (or whose weight is 0) is left out. Returns the loss and its parts (detached)."""
    lf = flow_loss(pred, target)
    loss, parts = lf, {"flow": lf.detach()}
    if logits is not None and lambda0 != 0.0:
        lr = reward_loss(logits, rewards)  # (B,)
        weighted = (reward_weight(t, lambda0) * lr).mean()
        loss = loss + weighted
        parts.update(reward=lr.mean().detach(), reward_weighted=weighted.detach())
    if state_pred is not None and state_target is not None and mu != 0.0:
        ls = state_loss(state_pred, state_target)
        loss = loss + mu * ls
        parts["state"] = ls.detach()
    return loss, parts


def euler_timesteps(num_steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Noise levels 1 = t_0 > t_1 > ... > t_N = 0 for N Euler steps; shift > 1 spends more steps at high noise
    (t' = shift t / (1 + (shift - 1) t), the SD3 schedule shift)."""
    if num_steps < 1:
        raise ValueError(f"num_inference_steps: must be >= 1, got {num_steps}")
    t = torch.linspace(1.0, 0.0, num_steps + 1, device=device)
    return shift * t / (1.0 + (shift - 1.0) * t)


def euler_step(x: torch.Tensor, v: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor) -> torch.Tensor:
    """One Euler step of dx/dt = v from t to t_next (< t)."""
    return x + (t_next - t) * v
