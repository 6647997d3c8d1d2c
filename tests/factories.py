"""Synthetic test data shared by the tests (no simulator needed)."""

from __future__ import annotations

import numpy as np

from robot.episode import Episode

# SafetyConfig keys for tests on robot.arms.fake.KinematicArm (it starts at (0, 0, 0.3); 1.0 = 5 cm): a box around
# its start and generic step limits. SafetyConfig's own defaults are a real arm's (a box in front of its base, 2 cm steps).
KINEMATIC_SAFETY = dict(workspace_low=(-0.6, -0.6, 0.0), workspace_high=(0.6, 0.6, 0.7), workspace_margin_m=0.0,
                        max_translation_m=0.05, startup_max_translation_m=0.02)


def random_episode(T: int = 12, H: int = 32, W: int = 32, cams: tuple[str, ...] = ("front",), seed: int = 0,
                   outcome: str = "success", depth: bool = False, **meta) -> Episode:
    """A valid episode with smooth random images (compress like camera frames, unlike white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    images = {}
    for ci, cam in enumerate(cams):
        frames = np.empty((T, H, W, 3), np.uint8)
        for t in range(T):
            cx, cy = (t * 2 + ci * 5) % W, (t + 3 * ci) % H
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 20.0)
            frames[t] = np.clip(np.stack([blob * 255, 80 + 40 * np.sin(xx / 5 + t), 60 + yy], -1), 0, 255).astype(np.uint8)
        images[cam] = frames
    rewards = np.zeros(T, np.float32)
    if outcome == "success":
        rewards[-2:] = 1.0
    ep = Episode(
        task="pick up the red cube", fps=10.0, timestamps=np.arange(T) * 0.1 + 100.0, images=images,
        depth={c: rng.integers(0, 2000, (T, H, W), dtype=np.uint16) for c in cams} if depth else {},
        joints=rng.normal(size=(T, 9)).astype(np.float32), ee_pose=rng.normal(size=(T, 7)).astype(np.float32),
        gripper=rng.uniform(0, 1, T).astype(np.float32), actions=rng.uniform(-1, 1, (T, 7)).astype(np.float32),
        rewards=rewards, interventions=rng.uniform(size=T) < 0.1, outcome=outcome,
        extras={"loop_dt": rng.uniform(0.09, 0.11, T)}, info={"seed": seed}, **meta,
    )
    return ep
