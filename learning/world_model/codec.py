"""Frame <-> latent codecs of the world model.

- `PatchCodec` (tiny default): pixel-unshuffle, a lossless reshape of 64x64x3 frames into (3*f*f, 64/f, 64/f)
  latents, with ``frames`` consecutive frames stacked in channels (temporal compression without loss). No
  parameters, no training, no cost; the transformer's patch embedding then sees 16x16-px patches of 2 frames.
- `WanCodec`: the video VAE of Cosmos-Predict2 (`diffusers.AutoencoderKLWan`): 8x spatial, 4x temporal
  (causal: the first frame is encoded alone, then groups of 4), latents normalised by the VAE's
  ``latents_mean``/``latents_std`` exactly as `Cosmos2VideoToWorldPipeline` does.

Why patch at tiny scale (measured by ``bench/world_model.py --codec``, numbers in bench/results/): a tiny Wan VAE
has to be trained before the world model can be, its reconstructions cap PSNR, and its encode/decode costs
more per imagined chunk than the 3x fewer transformer tokens it saves.

Both map uint8 video (B, T, H, W, 3) to float latents (B, C, T', h, w) and back.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def frames_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def unit_to_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) float in [-1, 1] -> (B, T, H, W, 3) uint8 (rounded, clipped)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


class PatchCodec(nn.Module):
    """Pixel-unshuffle by ``factor`` in space and stack ``frames`` consecutive frames in channels:
    (B, T, H, W, 3) -> (B, 3*f*f*frames, T/frames, H/f, W/f), exactly invertible (up to uint8 rounding)."""

    def __init__(self, factor: int, scale: float, frames: int = 1) -> None:
        super().__init__()
        self.factor, self.scale, self.temporal_factor = factor, scale, frames

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]
        n = self.temporal_factor
        if T % n:
            raise ValueError(f"patch codec: {T} frames is not a multiple of the {n} frames per latent frame")
        x = frames_to_unit(frames) * self.scale  # (B, 3, T, H, W)
        x = x.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        z = F.pixel_unshuffle(x, self.factor)  # (B*T, 3*f*f, h, w)
        z = z.unflatten(0, (B, T // n, n)).flatten(2, 3)  # (B, T/n, n*3*f*f, h, w): frame j of a group -> channel block j
        return z.transpose(1, 2).contiguous()  # (B, C, T/n, h, w)

    def hold_last(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, T', h, w) latents -> (B, C, 1, h, w): a latent frame made of the last frame, repeated (the scene
        held still)."""
        c1 = z.shape[1] // self.temporal_factor  # channels of one frame
        return z[:, -c1:, -1:].repeat(1, self.temporal_factor, 1, 1, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        B, C, Tl = z.shape[:3]
        n = self.temporal_factor
        z = z.transpose(1, 2).unflatten(2, (n, C // n)).flatten(0, 2)  # (B*Tl*n, 3*f*f, h, w)
        x = F.pixel_shuffle(z, self.factor)  # (B*T, 3, H, W)
        x = x.unflatten(0, (B, Tl * n)).transpose(1, 2) / self.scale  # (B, 3, T, H, W)
        return unit_to_frames(x)


class WanCodec(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        cfg = vae.config
        self.temporal_factor = 2 ** sum(bool(x) for x in cfg.temperal_downsample)
        z = cfg.z_dim
        self.register_buffer("mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1), persistent=False)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames_to_unit(frames).to(self.vae.dtype)  # (B, 3, T, H, W), T = 1 + 4m
        z = self.vae.encode(x).latent_dist.mode()  # deterministic: the posterior mean
        return (z.float() - self.mean) / self.std  # (B, 16, 1 + m, h, w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = (z.float() * self.std + self.mean).to(self.vae.dtype)
        return unit_to_frames(self.vae.decode(z).sample)  # (B, 1 + 4(T'-1), H, W, 3)
