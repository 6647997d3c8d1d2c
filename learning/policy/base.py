"""The policy interface every VLA implements, and the input handling they share.

Shapes (B = batch, K = chunk length, D = action dimension = 7, N = K * D tokens, V = 256 bins):

- ``images``: (B, H, W, 3) uint8 RGB (numpy or torch; a single (H, W, 3) frame counts as B = 1);
- ``instructions``: a list of B strings, or one string used for the whole batch;
- ``states``: (B, S) float32 robot states in the policy's ``state_features`` order (`robot.state`), raw units
  (the policy normalises); required by a policy with a state input, refused by one without;
- ``tokens``: (B, N) int64, step-major (``tokens[:, k * D + d]`` is the bin of action k, dimension d);
- ``chunks``: (B, K, D) float32 in [-1, 1] (the bin centres of ``tokens``).

Every method returns **torch tensors on the policy's device**. ``token_log_probs``/``log_prob``/``entropy``
carry gradients (call them under ``torch.no_grad()`` when none are wanted); ``sample``/``act`` never do.

``temperature`` scales the logits before the softmax. ``sample`` returns the log-probability of what it drew
*under that temperature*, and ``token_log_probs(..., temperature=t)`` recomputes exactly that (the PPO ratio
of GRPO compares the two at the same temperature, as SimpleVLA-RL does). ``temperature == 0`` is greedy
decoding (the argmax of every token; its log-probability is 0, the limit of a vanishing temperature);
``act`` is ``sample(temperature=0)``.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from learning.policy.tokenizers import ActionTokenizer


class PolicyInputError(ValueError):
    """An observation or instruction handed to a policy has the wrong shape, dtype or content."""


@runtime_checkable
class VLAPolicy(Protocol):
    chunk_length: int  # K
    action_dim: int  # D

    state_features: tuple[str, ...]  # () = the policy sees no robot state

    def sample(self, images, instructions: Sequence[str] | str, temperature: float = 1.0,
               generator: torch.Generator | None = None, states=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> chunks (B, K, D) float32, tokens (B, N) int64, log_prob (B,) float32."""

    def token_log_probs(self, images, instructions: Sequence[str] | str, tokens, temperature: float = 1.0,
                        states=None) -> torch.Tensor:
        """-> (B, N) float32 log-probabilities of ``tokens`` (with grad)."""

    def log_prob(self, images, instructions: Sequence[str] | str, tokens, temperature: float = 1.0, states=None) -> torch.Tensor:
        """-> (B,) = token_log_probs(...).sum(-1)."""

    def entropy(self, images, instructions: Sequence[str] | str, tokens=None, temperature: float = 1.0,
                states=None) -> torch.Tensor:
        """-> (B, N) per-token entropy of the policy's distribution (nats)."""

    def act(self, images, instructions: Sequence[str] | str, states=None) -> torch.Tensor:
        """-> chunks (B, K, D) float32, greedy."""

    def tokens_to_actions(self, tokens) -> torch.Tensor: ...

    def actions_to_tokens(self, actions) -> torch.Tensor: ...

    def save_pretrained(self, folder) -> None: ...


class PolicyMixin:
    """What both VLAs share: input checking, the action bins, and the methods derived from the two primitives
    ``sample`` and ``token_log_probs``."""

    chunk_length: int
    action_dim: int
    action_tokenizer: ActionTokenizer

    # ------------------------------------------------------------------ inputs
    def _device(self) -> torch.device:
        return next(self.parameters()).device  # type: ignore[attr-defined]

    def _images(self, images, image_size: tuple[int, int] | None) -> torch.Tensor:
        """(B, H, W, 3) uint8 torch tensor on the policy's device; refuses anything else with the shape it got."""
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8:
                raise PolicyInputError(f"images: expected dtype uint8, got {images.dtype}")
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor):
            raise PolicyInputError(f"images: expected a numpy array or torch tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise PolicyInputError(f"images: expected dtype uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images[None]
        want = "(B, H, W, 3)" if image_size is None else f"(B, {image_size[0]}, {image_size[1]}, 3)"
        if images.ndim != 4 or images.shape[-1] != 3 or (image_size is not None and tuple(images.shape[1:3]) != tuple(image_size)):
            raise PolicyInputError(f"images: expected shape {want} uint8 RGB, got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise PolicyInputError("images: empty batch")
        return images.to(self._device())

    @staticmethod
    def _instructions(instructions: Sequence[str] | str, batch: int) -> list[str]:
        if isinstance(instructions, str):
            return [instructions] * batch
        instructions = list(instructions)
        if len(instructions) != batch:
            raise PolicyInputError(f"instructions: {len(instructions)} given for a batch of {batch} images")
        return instructions

    def _tokens(self, tokens, batch: int) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens).to(self._device())
        n = self.chunk_length * self.action_dim
        if t.ndim != 2 or t.shape != (batch, n):
            raise PolicyInputError(f"tokens: expected shape ({batch}, {n}), got {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise PolicyInputError(f"tokens: expected integer bins, got {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.action_tokenizer.n_bins):
            raise PolicyInputError(f"tokens: values must be in [0, {self.action_tokenizer.n_bins}), got [{int(t.min())}, {int(t.max())}]")
        return t.long()

    @property
    def state_features(self) -> tuple[str, ...]:
        return tuple(getattr(getattr(self, "config", None), "state_features", ()) or ())

    def _states(self, states, batch: int) -> torch.Tensor | None:
        """(B, S) float32 on the policy's device, or None for a policy without a state input."""
        feats = self.state_features
        if not feats:
            if states is not None:
                raise PolicyInputError("states: this policy takes no robot state (it was trained on images only)")
            return None
        if states is None:
            raise PolicyInputError(f"states: this policy needs the robot state {list(feats)} (robot.state) with every image")
        s = torch.as_tensor(np.asarray(states, dtype=np.float32) if not isinstance(states, torch.Tensor) else states)
        if s.ndim == 1:
            s = s[None]
        if s.shape != (batch, len(feats)):
            raise PolicyInputError(f"states: expected shape ({batch}, {len(feats)}) for {list(feats)}, got {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise PolicyInputError("states: contains NaN or inf")
        return s.to(device=self._device(), dtype=torch.float32)

    @staticmethod
    def _check_temperature(temperature: float, allow_zero: bool) -> float:
        t = float(temperature)
        if not np.isfinite(t) or t < 0 or (t == 0 and not allow_zero):
            raise PolicyInputError(f"temperature: must be {'>= 0' if allow_zero else '> 0'} and finite, got {temperature}")
        return t

    # ------------------------------------------------------------------ derived methods
    def log_prob(self, images, instructions, tokens, temperature: float = 1.0, states=None) -> torch.Tensor:
        return self.token_log_probs(images, instructions, tokens, temperature, states=states).sum(-1)  # type: ignore[attr-defined]

    @torch.no_grad()
    def act(self, images, instructions, states=None) -> torch.Tensor:
        return self.sample(images, instructions, temperature=0.0, states=states)[0]  # type: ignore[attr-defined]

    def tokens_to_actions(self, tokens) -> torch.Tensor:
        """(..., K * D) int bins -> (..., K, D) float32 actions (bin centres)."""
        t = torch.as_tensor(tokens)
        a = self.action_tokenizer.low + t.to(torch.float32) * self.action_tokenizer.bin_width
        return a.reshape(*t.shape[:-1], self.chunk_length, self.action_dim)

    def actions_to_tokens(self, actions) -> torch.Tensor:
        """(..., K, D) float actions -> (..., K * D) int64 bins (nearest centre, clipped to the range)."""
        a = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions, dtype=torch.float32)
        if a.shape[-2:] != (self.chunk_length, self.action_dim):
            raise PolicyInputError(f"actions: expected shape (..., {self.chunk_length}, {self.action_dim}), got {tuple(a.shape)}")
        at = self.action_tokenizer
        t = torch.round((a.clamp(at.low, at.high) - at.low) / at.bin_width).long()
        return t.reshape(*a.shape[:-2], self.chunk_length * self.action_dim)
