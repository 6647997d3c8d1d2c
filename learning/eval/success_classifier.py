"""The independent success judge for visual alignment: a small CNN trained on REAL frames only.

It reads one frame and says whether the task is in its success state there (the per-frame ``observation.success`` label
of the store). It never sees a generated frame while training, so when it reads success from a world model's
video, the video *shows* success; an episode counts as successful when any frame's probability is above the
reward threshold (0.9, the same rule as the reward head's).
Its own accuracy on real held-out episodes is reported next to the alignment it measures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from learning.data.store import EpisodeStore

log = logging.getLogger(__name__)


class SuccessClassifier(ModelMixin, ConfigMixin):
    """(N, H, W, 3) uint8 frames -> success logits (N,). Four stride-2 convs, then mean- and max-pooling (the
    evidence -- the cube on the goal -- is a few pixels), then a linear layer."""

    @register_to_config
    def __init__(self, image_size: int = 64, width: int = 32) -> None:
        super().__init__()
        w = width
        self.convs = nn.ModuleList([nn.Conv2d(3, w, 3, 2, 1), nn.Conv2d(w, w, 3, 1, 1), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.Conv2d(2 * w, 2 * w, 3, 2, 1)])
        self.head = nn.Linear(4 * w, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        S = self.config.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (S, S, 3):
            raise ValueError(f"success classifier: expected (N, {S}, {S}, 3) frames, got {tuple(frames.shape)}")
        x = frames.permute(0, 3, 1, 2).float().to(self.device) / 127.5 - 1.0  # (N, 3, H, W)
        for conv in self.convs:
            x = F.silu(conv(x))
        feats = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)  # (N, 4w)
        return self.head(feats).squeeze(1)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(..., H, W, 3) uint8 -> success probabilities with the leading shape."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        out = [torch.sigmoid(self(torch.from_numpy(np.ascontiguousarray(flat[i:i + batch_size])))).cpu().numpy()
               for i in range(0, len(flat), batch_size)]
        return np.concatenate(out).reshape(lead).astype(np.float32) if out else np.zeros(lead, np.float32)

    def reward_fn(self):
        """A frame-based reward for `WorldModelEnv` (the "without reward head" ablation): frames -> probabilities."""
        self.eval()
        return lambda frames: self.predict(frames)


def real_frames(stores: Sequence[EpisodeStore], indices: Sequence[Sequence[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All frames and per-frame success labels of the given store episodes: (N, H, W, 3) uint8, (N,) float32."""
    frames, labels = [], []
    for si, store in enumerate(stores):
        for ei in (range(len(store)) if indices is None else indices[si]):
            frames.append(store.frames(ei))
            labels.append(store.success(ei))
    if not frames:
        raise ValueError("success classifier: no episodes to train on")
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"success classifier: the stores hold frames of several sizes {sorted(shapes)}; use one rig")
    return np.concatenate(frames), np.concatenate(labels)


def train_success_classifier(stores: Sequence[EpisodeStore | str | Path], steps: int = 600, batch_size: int = 64, lr: float = 2e-3,
                             seed: int = 0, width: int = 32) -> SuccessClassifier:
    """Train on real frames of ``stores`` (balanced positives / negatives per batch; small shifts as augmentation)."""
    stores = [s if isinstance(s, EpisodeStore) else EpisodeStore(s, create=False) for s in stores]
    return train_on_frames(*real_frames(stores), steps=steps, batch_size=batch_size, lr=lr, seed=seed, width=width)


def train_on_frames(frames: np.ndarray, labels: np.ndarray, steps: int = 600, batch_size: int = 64, lr: float = 2e-3,
                    seed: int = 0, width: int = 32) -> SuccessClassifier:
    """Train on (N, H, W, 3) uint8 ``frames`` with (N,) 0/1 ``labels``: balanced batches, a 2-px jitter, cosine lr."""
    pos, neg = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"success classifier: needs frames of both kinds; got {len(pos)} success and {len(neg)} other frames")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SuccessClassifier(image_size=frames.shape[1], width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = np.concatenate([rng.choice(pos, batch_size // 2), rng.choice(neg, batch_size - batch_size // 2)])
        x = torch.from_numpy(frames[idx])
        dy, dx = rng.integers(-2, 3, 2)  # a 2-px jitter: generated frames are not pixel-aligned with real ones
        x = torch.roll(x, shifts=(int(dy), int(dx)), dims=(1, 2))
        loss = F.binary_cross_entropy_with_logits(model(x), torch.from_numpy(labels[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * (step + 1) / steps))
    log.info("success classifier: %d steps on %d real frames (%d success) in %.0f s, last loss %.3f",
             steps, len(frames), len(pos), time.perf_counter() - t0, loss.item())
    return model.eval()
