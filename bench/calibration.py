"""Calibration accuracy against ground truth: intrinsics vs number of views, hand-eye vs number of pose pairs,
both vs pixel noise.

Every number comes from the full pipeline on rendered images: a ChArUco board (9x6, 30 mm squares,
DICT_5X5_100) is rendered through a known 640x480 camera (fx 615, fy 612.5, off-centre principal point,
mild barrel distortion) at known poses (0.38-0.6 m, tilts up to 35 deg) with 0.6 px optical blur and
sensor noise of 2 gray levels (the default noise); OpenCV's CharucoDetector finds the corners; the
calibration runs as `wvl calibrate` runs it. Pixel noise is then swept by adding Gaussian noise of sigma
px to the detected corners ("added px"; "corner px" = the resulting RMS corner error against the truth).
Hand-eye samples also carry robot pose noise (0.2 mm / 0.02 deg per axis). Each cell: ``--trials`` random
subsets of a rendered pool; median (p50) and 90th percentile (p90) of the error against the truth.

    .venv/bin/python bench/calibration.py [--trials 5] [--seed 0]

Last line (default noise, no added px; 20 views for intrinsics; 15 pose pairs, medians over the trials of
eye-in-hand and eye-to-hand together):
handeye_mm_15=... handeye_deg_15=... focal_err_pct=... pp_err_px=...
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.board import BoardConfig, BoardDetector, Detection, estimate_pose  # noqa: E402
from calibration.errors import CalibrationError  # noqa: E402
from calibration.geometry import transform_delta  # noqa: E402
from calibration.handeye import HandEyeConfig, HandEyeSample, solve_handeye  # noqa: E402
from calibration.intrinsics import IntrinsicsConfig, calibrate_intrinsics  # noqa: E402
from calibration.synthetic import (  # noqa: E402
    HandEyeRig, default_camera, handeye_rig_poses, perturb_pose, random_view_poses, render_board, true_corners,
)
from rich.console import Console  # noqa: E402

from robot.console import table  # noqa: E402

IMAGE_NOISE = 2.0  # sensor noise sigma of the renders, gray levels (the default noise)
ADDED_PX = (0.0, 0.1, 0.25, 0.5, 1.0)  # extra Gaussian noise on the detected corners, px
VIEW_COUNTS = (8, 12, 20, 30)
PAIR_COUNTS = (6, 10, 15, 25)
ROBOT_NOISE_M, ROBOT_NOISE_DEG = 0.0002, 0.02


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def jitter(det: Detection, sigma_px: float, rng: np.random.Generator) -> Detection:
    if sigma_px <= 0:
        return det
    return dataclasses.replace(det, image_points=det.image_points + rng.normal(0.0, sigma_px, det.image_points.shape))


def corner_rms(dets: list[Detection], truths: list[np.ndarray]) -> float:
    err = np.concatenate([d.image_points - t[d.ids] for d, t in zip(dets, truths)])
    return float(np.sqrt(np.mean(np.sum(err ** 2, axis=1))))


def intrinsics_sweep(board, camera, rng, trials) -> tuple[list, dict]:
    pool_size = max(VIEW_COUNTS) + 10
    poses = random_view_poses(board, camera, pool_size, rng)
    detector = BoardDetector(board)
    dets = [detector.detect(render_board(board, camera, T, noise_sigma=IMAGE_NOISE, rng=rng)) for T in poses]
    truths = [true_corners(board, camera, T) for T in poses]
    rows, headline = [], {}
    for added in ADDED_PX:
        noisy = [jitter(d, added, rng) for d in dets]
        for n in VIEW_COUNTS:
            f_err, pp_err = [], []
            for _ in range(trials):
                pick = rng.choice(pool_size, n, replace=False)
                res = calibrate_intrinsics([(f"v{i}", noisy[i]) for i in pick], board, IntrinsicsConfig(min_views=3))
                it = res.intrinsics
                f_err.append(100 * max(abs(it.fx - camera.fx) / camera.fx, abs(it.fy - camera.fy) / camera.fy))
                pp_err.append(max(abs(it.cx - camera.cx), abs(it.cy - camera.cy)))
            rows.append((f"{added:g}", f"{corner_rms(noisy, truths):.3f}", n, f"{pct(f_err, 50):.3f}", f"{pct(f_err, 90):.3f}",
                         f"{pct(pp_err, 50):.2f}", f"{pct(pp_err, 90):.2f}"))
            if added == 0 and n == 20:
                headline = {"focal_err_pct": pct(f_err, 50), "pp_err_px": pct(pp_err, 50)}
    return rows, headline


def handeye_sweep(kind, rng, trials) -> tuple[list, dict]:
    rig = HandEyeRig.default(kind)
    detector = BoardDetector(rig.board)
    pool_size = max(PAIR_COUNTS) + 10
    truth = handeye_rig_poses(rig, pool_size, rng)
    measured = [perturb_pose(T, rng, ROBOT_NOISE_M, ROBOT_NOISE_DEG) for T in truth]
    dets = [detector.detect(rig.view(T, rng, noise_sigma=IMAGE_NOISE)) for T in truth]
    truths = [true_corners(rig.board, rig.camera, rig.board_pose_at(T)) for T in truth]
    rows, at15 = [], {}
    cfg = HandEyeConfig(kind=kind, min_samples=3, max_reprojection_px=5.0)
    for added in ADDED_PX:
        noisy = [jitter(d, added, rng) for d in dets]
        samples = []
        for d, T_meas in zip(noisy, measured):
            T_cam_board, rms = estimate_pose(d, rig.camera.K, rig.camera.dist)
            samples.append(HandEyeSample(T_meas, T_cam_board, rms))
        for n in PAIR_COUNTS:
            mm, deg, held, refused = [], [], [], 0
            for _ in range(trials):
                pick = rng.choice(pool_size, n, replace=False)
                try:
                    res = solve_handeye([samples[i] for i in pick], cfg)
                except CalibrationError:  # a degenerate draw (too little rotation): counted, not hidden
                    refused += 1
                    continue
                e = transform_delta(rig.X, res.X)
                mm.append(e[0])
                deg.append(e[1])
                held.append(res.best.heldout_mm)
            rows.append((kind, f"{added:g}", f"{corner_rms(noisy, truths):.3f}", n, f"{pct(mm, 50):.2f}", f"{pct(mm, 90):.2f}",
                         f"{pct(deg, 50):.3f}", f"{pct(deg, 90):.3f}", f"{pct(held, 50):.2f}", refused))
            if added == 0 and n == 15:
                at15 = {"mm": mm, "deg": deg}
    return rows, at15


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    # Ill-conditioned draws at high noise make solve_handeye warn (as it should for a user); the table says it.
    logging.basicConfig(level=logging.ERROR)
    rng = np.random.default_rng(args.seed)
    board, camera = BoardConfig(), default_camera()
    t0 = time.perf_counter()
    rows, intr = intrinsics_sweep(board, camera, rng, args.trials)
    out = Console(width=150)
    out.print(table(f"intrinsics error vs views and pixel noise ({args.trials} trials per cell; truth fx {camera.fx:g} "
                    f"cx {camera.cx:g} cy {camera.cy:g}; focal = worse of fx, fy; pp = worse of cx, cy)",
                    ["added px", "corner px", "views", "focal % p50", "focal % p90", "pp px p50", "pp px p90"], rows))
    he_rows, mm15, deg15 = [], [], []
    for kind in ("eye_in_hand", "eye_to_hand"):
        r, at15 = handeye_sweep(kind, rng, args.trials)
        he_rows += r
        mm15 += at15["mm"]
        deg15 += at15["deg"]
    out.print(table(f"hand-eye error vs pose pairs and pixel noise ({args.trials} trials per cell; robot noise "
                    f"{ROBOT_NOISE_M * 1e3:g} mm / {ROBOT_NOISE_DEG:g} deg per axis)",
                    ["set-up", "added px", "corner px", "pairs", "mm p50", "mm p90", "deg p50", "deg p90",
                     "held-out mm p50", "refused"], he_rows))
    print(f"elapsed {time.perf_counter() - t0:.0f} s")
    print(f"handeye_mm_15={pct(mm15, 50):.3f} handeye_deg_15={pct(deg15, 50):.4f} "
          f"focal_err_pct={intr['focal_err_pct']:.3f} pp_err_px={intr['pp_err_px']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
