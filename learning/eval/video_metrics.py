"""Frame-quality metrics of generated video against the real frames: PSNR and SSIM (uint8 RGB, data range 255).

SSIM is Wang et al. 2004 with the usual constants: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
computed per colour channel and averaged, 'valid' windows only (no padding), as scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB for identical frames (MSE = 0)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frames: generated {a.shape} and real {b.shape} differ in shape")
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"frames: expected (T, H, W, 3), got {a.shape}")


def psnr(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB, (T, H, W, 3) uint8 pairs -> (T,)."""
    _check(generated, real)
    mse = ((generated.astype(np.float64) - real.astype(np.float64)) ** 2).reshape(len(real), -1).mean(1)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(255.0**2 / mse)
    return np.minimum(out, PSNR_CAP)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-frame SSIM, (T, H, W, 3) uint8 pairs -> (T,) in [-1, 1]."""
    _check(generated, real)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x = torch.from_numpy(generated).permute(0, 3, 1, 2).reshape(-1, 1, *generated.shape[1:3]).double()  # (T*3, 1, H, W)
    y = torch.from_numpy(real).permute(0, 3, 1, 2).reshape(-1, 1, *real.shape[1:3]).double()
    w = _gaussian_window()
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))  # (T*3, 1, H-10, W-10)
    return s.mean((1, 2, 3)).view(len(real), 3).mean(1).numpy()
