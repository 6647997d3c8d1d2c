"""`wvl calibrate board | intrinsics | handeye | check` (config: robot/conf/calibrate.yaml). No torch here."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from calibration.board import BoardConfig, BoardDetector, board_image, board_svg, estimate_pose, png_with_dpi
from calibration.drift import DriftThresholds, check_drift
from calibration.errors import CalibrationError
from calibration.files import (
    HandEyeCalibration, handeye_path, intrinsics_path, load_drift_reference, load_handeye, load_intrinsics, read_yaml,
    save_drift_reference, save_handeye, save_intrinsics, write_yaml,
)
from calibration.geometry import matrix_to_pose, mean_transform, pose_to_matrix, transform_delta
from calibration.guide import GuideConfig, HandEyeSession
from calibration.handeye import HandEyeConfig, HandEyeResult, solve_handeye
from calibration.intrinsics import IntrinsicsConfig, calibrate_intrinsics, compare_intrinsics, gate_view
from calibration.samples import load_samples
from calibration.sources import SourceConfig, capture_views, factory_intrinsics, import_factory, iter_images, open_camera
from robot.console import print_table

log = logging.getLogger(__name__)

MODES = ("board", "intrinsics", "handeye", "check")
EXIT_MOVED = 3  # `wvl calibrate check` exit status when the camera moved (scripts can gate on it)


@runtime_checkable
class PoseCommandable(Protocol):
    """Optional arm capability: move the flange to an absolute pose (7,) xyz + quat xyzw, blocking.
    With handeye.auto_move=true such an arm is driven to each suggested pose; otherwise the operator moves it."""

    def move_to_pose(self, pose: np.ndarray) -> None: ...


def ask(prompt: str) -> str:
    """Operator input (a function so tests and GUIs can replace it)."""
    return input(prompt)


def _container(cfg: DictConfig, key: str) -> dict[str, Any]:
    return dict(OmegaConf.to_container(cfg[key], resolve=True))


def _board(cfg: DictConfig) -> BoardConfig:
    board = BoardConfig.from_dict(_container(cfg, "board"))
    stored = Path(cfg.dir) / "board.yaml"
    if stored.exists():
        try:
            printed = BoardConfig.from_dict(read_yaml(stored))
        except ValueError as e:
            log.warning("%s is not a board spec (%s)", stored, e)
        else:
            diff = {k: (v, getattr(board, k)) for k, v in printed.to_dict().items() if getattr(board, k) != v}
            if diff:
                log.warning("board settings differ from the printed board in %s: %s; pass the printed values "
                            "(board.<key>=...) if the board is not found", stored,
                            ", ".join(f"{k} printed {a} vs now {b}" for k, (a, b) in diff.items()))
    return board


def main(cfg: DictConfig, mode: str | None = None) -> int:
    mode = mode or MODES[0]
    if not cfg.camera or "/" in str(cfg.camera) or "." in str(cfg.camera):
        raise ValueError(f"camera: {cfg.camera!r} must be a plain camera name (the Episode image key), e.g. front")
    return {"board": run_board, "intrinsics": run_intrinsics, "handeye": run_handeye, "check": run_check}[mode](cfg)


# ---------------------------------------------------------------------------------------------- board
def run_board(cfg: DictConfig) -> int:
    board = BoardConfig.from_dict(_container(cfg, "board"))
    out = Path(cfg.dir)
    out.mkdir(parents=True, exist_ok=True)
    margin = float(cfg.print.margin_m)
    svg, png, spec = out / "board.svg", out / "board.png", out / "board.yaml"
    svg.write_text(board_svg(board, margin))
    png.write_bytes(png_with_dpi(board_image(board, int(cfg.print.dpi), margin), int(cfg.print.dpi)))  # prints at size
    write_yaml(spec, board.to_dict(), "# The printed ChArUco board (wvl calibrate board). Lengths in metres.\n")
    w, h = board.size_m
    W, H = (w + 2 * margin) * 1000, (h + 2 * margin) * 1000
    print_table(f"ChArUco board -> {out}", ["what", "value"], [
        ("squares", f"{board.squares_x} x {board.squares_y} ({board.n_corners} corners)"),
        ("square / marker", f"{board.square_length_m * 1000:g} mm / {board.marker_length_m * 1000:g} mm"),
        ("dictionary", board.dictionary + (" (legacy pattern)" if board.legacy_pattern else "")),
        ("sheet size", f"{W:.0f} x {H:.0f} mm" + ("" if max(W, H) <= 297 and min(W, H) <= 210 else "  (larger than A4: print on A3)")),
        ("print this", f"{svg} at 100 % scale (no 'fit to page')"),
        ("raster", f"{png} ({int(cfg.print.dpi)} dpi)"),
        ("spec", str(spec)),
    ])
    print(f"Glue it flat on rigid board. Measure one square: if it is not {board.square_length_m * 1000:g} mm, "
          f"pass board.square_length_m=<measured m> (and marker_length_m scaled alike) to every calibrate command.")
    return 0


# ---------------------------------------------------------------------------------------------- intrinsics
def run_intrinsics(cfg: DictConfig) -> int:
    board = _board(cfg)
    src = SourceConfig(**_container(cfg, "source"))
    icfg_d = _container(cfg, "intrinsics")
    save_views = bool(icfg_d.pop("save_views", True))
    icfg = IntrinsicsConfig(**icfg_d)
    folder = Path(cfg.dir)
    factory = None
    if src.live:
        camera = open_camera(src, cfg.camera)
        camera.connect()
        try:
            try:
                factory = factory_intrinsics(camera)
            except Exception as e:  # a camera without factory intrinsics is fine; say why they are missing
                log.info("no factory intrinsics from %s: %s", cfg.camera, e)
            print(f"Show the board to {cfg.camera}: hold it still in each place; tilt it 20-45 deg; cover the image "
                  f"edges and corners. Capturing {src.views} views (timeout {src.timeout_s:.0f} s).")
            views = capture_views(camera, BoardDetector(board), src.views, src.timeout_s, accept=lambda d: gate_view(d, icfg),
                                  on_view=lambda i, name: print(f"  captured {i}/{src.views}"))
        finally:
            camera.disconnect()
        if save_views:
            vdir = folder / f"{cfg.camera}.intrinsics_views"
            vdir.mkdir(parents=True, exist_ok=True)
            for name, rgb in views:
                cv2.imwrite(str(vdir / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            log.info("captured views saved in %s (rerun offline with source.kind=folder source.path=%s)", vdir, vdir)
    else:
        found: dict[str, Any] = {}

        def read_factory(camera) -> None:  # a RealSense .db3 recording carries the device's calibration
            try:
                found["factory"] = factory_intrinsics(camera)
            except Exception as e:
                log.info("no factory intrinsics in %s: %s", src.path, e)

        views = iter_images(src, cfg.camera, on_connect=read_factory)
    result = calibrate_intrinsics(views, board, icfg, camera_name=cfg.camera)
    if not src.live:
        factory = found.get("factory")
    path = intrinsics_path(folder, cfg.camera)
    previous = load_intrinsics(path) if path.exists() else None
    save_intrinsics(path, result.intrinsics, result.rms_px, result.n_used)

    print_table(f"views ({result.n_used} used of {len(result.views)})", ["view", "used", "corners", "board area", "blur px", "error px", "note"], [
        (v.name, "yes" if v.accepted else "no", v.n_corners, f"{v.area_fraction:.1%}", f"{v.blur_px:.2f}",
         "-" if np.isnan(v.error_px) else f"{v.error_px:.3f}", v.reason) for v in result.views])
    it, s = result.intrinsics, result.std
    print_table(f"intrinsics {cfg.camera} {it.width}x{it.height} -> {path}", ["what", "value"], [
        ("RMS reprojection", f"{result.rms_px:.3f} px (good: < 0.5 px)"),
        ("fx, fy", f"{it.fx:.2f} +- {s['fx']:.2f}, {it.fy:.2f} +- {s['fy']:.2f} px"),
        ("cx, cy", f"{it.cx:.2f} +- {s['cx']:.2f}, {it.cy:.2f} +- {s['cy']:.2f} px"),
        ("distortion (k1 k2 p1 p2 k3)", " ".join(f"{x:.4f}" for x in it.dist)),
        ("image coverage", f"{result.coverage:.0%} of 4x4 cells"),
        ("largest board tilt", f"{result.max_tilt_deg:.0f} deg"),
    ])
    for name, other in (("factory (camera)", factory), ("previous file", previous)):
        if other is not None:
            c = compare_intrinsics(result.intrinsics, other)
            print_table(f"{name} vs this calibration", ["fx %", "fy %", "cx px", "cy px", "mean px", "max px"],
                        [(f"{c['fx_pct']:+.2f}", f"{c['fy_pct']:+.2f}", f"{c['cx_px']:+.2f}", f"{c['cy_px']:+.2f}",
                          f"{c['mean_px']:.2f}", f"{c['max_px']:.2f}")])
    for w in result.warnings:
        print(f"warning: {w}")
    return 0


# ---------------------------------------------------------------------------------------------- hand-eye
def _handeye_config(cfg: DictConfig) -> HandEyeConfig:
    h = cfg.handeye
    return HandEyeConfig(kind=h.kind, methods=tuple(h.methods), min_samples=int(h.min_samples),
                         max_reprojection_px=float(h.max_reprojection_px), min_rotation_deg=float(h.min_rotation_deg),
                         min_axis_angle_deg=float(h.min_axis_angle_deg))


def _load_intrinsics_for(cfg: DictConfig):
    path = intrinsics_path(cfg.dir, cfg.camera)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `wvl calibrate intrinsics camera={cfg.camera}` first "
                                "(or save the camera driver's camera_info there)")
    return path, load_intrinsics(path)


def _read_still_pose(arm, settle_s: float = 0.3) -> np.ndarray | None:
    """The flange pose if the arm is still (two reads ``settle_s`` apart agree to 0.5 mm / 0.1 deg), else None:
    a sample taken while moving pairs an image with a different pose (TF and camera stamps differ)."""
    a = pose_to_matrix(arm.read_state().ee_pose)
    time.sleep(settle_s)
    b = pose_to_matrix(arm.read_state().ee_pose)
    mm, deg = transform_delta(a, b)
    return b if mm < 0.5 and deg < 0.1 else None


def _live_session(cfg: DictConfig, board: BoardConfig, intr, hcfg: HandEyeConfig) -> tuple[HandEyeResult, Path]:
    h = cfg.handeye
    src = SourceConfig(**_container(cfg, "source"))
    if not h.arm_factory or not src.live:
        raise ValueError("a live hand-eye session needs handeye.arm_factory=<module:function> and a live camera "
                         "(source.kind=realsense or camera); or solve from a file with handeye.samples=<samples.yaml>")
    arm = import_factory(h.arm_factory, "handeye.arm_factory")()
    camera = open_camera(src, cfg.camera)
    session = HandEyeSession(board, intr, hcfg, GuideConfig(**_container(cfg, "guide")))
    # Moving a real arm on its own is opt-in: with auto_move the arm must offer move_to_pose.
    auto = bool(h.auto_move)
    if auto and not isinstance(arm, PoseCommandable):
        raise ValueError(f"handeye.auto_move=true but the arm from {h.arm_factory} has no move_to_pose(pose); "
                         "move it by hand (auto_move=false) or give an arm that can be commanded to a pose")
    arm.connect()
    camera.connect()
    try:
        print(f"Hand-eye ({hcfg.kind}): put the board {'on the table in view of the wrist camera' if hcfg.kind == 'eye_in_hand' else 'on the flange, in view of the camera'}. "
              "Enter = take a sample, u = undo, s = solve now, q = quit.")
        while True:
            ready, status = session.status()
            if ready and len(session.samples) >= int(h.n_samples):
                break
            sug = session.suggest()
            current = pose_to_matrix(arm.read_state().ee_pose)
            if sug is None:
                print("first sample: any pose with the whole board in view")
            else:
                print(f"[{status}] next: {sug.describe(current)}")
                if auto:
                    arm.move_to_pose(sug.pose)
            try:
                key = ask("> ").strip().lower()
            except EOFError as e:
                raise RuntimeError("the guided session reads Enter / u / s / q from a terminal and stdin is closed; "
                                   "run it in a terminal, or solve from a file with handeye.samples=<samples.yaml>") from e
            if key == "q":
                raise KeyboardInterrupt
            if key == "u":
                session.remove_last()
                continue
            if key == "s":
                break
            pose = _read_still_pose(arm)
            if pose is None:
                print("  the robot is still moving; wait until it stops, then take the sample")
                continue
            frame = camera.read()
            verdict = session.add(pose, frame.rgb, name=f"{len(session.samples):03d}")
            print(("  ok: " if verdict.accepted else "  refused: ") + verdict.reason)
    finally:
        camera.disconnect()
        arm.disconnect()
    samples_file = Path(cfg.dir) / f"{cfg.camera}.handeye_samples.yaml"
    session.save_samples(samples_file)
    return session.solve(), samples_file


def run_handeye(cfg: DictConfig) -> int:
    board = _board(cfg)
    hcfg = _handeye_config(cfg)
    intr_path, intr = _load_intrinsics_for(cfg)
    h = cfg.handeye
    if h.samples:
        kind, samples = load_samples(h.samples, board, intr)
        if kind is not None and kind != hcfg.kind:
            raise ValueError(f"handeye.samples {h.samples} were taken as {kind} but handeye.kind={hcfg.kind}; "
                             f"pass handeye.kind={kind}")
        result, samples_file = solve_handeye(samples, hcfg), Path(h.samples)
    else:
        result, samples_file = _live_session(cfg, board, intr, hcfg)
    parent = h.parent_frame or ("base_link" if hcfg.kind == "eye_to_hand" else "ee_link")
    T_child_optical = pose_to_matrix(h.child_to_optical) if h.child_to_optical is not None else None
    previous_path = handeye_path(cfg.dir, cfg.camera)
    previous = load_handeye(previous_path) if previous_path.exists() else None
    calib = HandEyeCalibration.from_result(result, cfg.camera, parent, h.child_frame, h.optical_frame, T_child_optical,
                                           board.to_dict(), intr_path.name, str(samples_file))
    path = save_handeye(cfg.dir, calib)

    rows = []
    for m in result.methods.values():
        mm, deg = transform_delta(result.X, m.X)
        rows.append((m.name + (" *" if m.name == result.method else ""), f"{m.residual_mm:.2f} / {m.residual_deg:.3f}",
                     f"{m.heldout_mm:.2f} / {m.heldout_deg:.3f}", f"{mm:.2f} / {deg:.3f}"))
    print_table(f"hand-eye methods ({result.n_samples} samples; * kept: best held-out consistency)",
                ["method", "residual mm / deg", "held-out mm / deg", "vs kept mm / deg"], rows)
    p = matrix_to_pose(calib.T_parent_child)
    print_table(f"{calib.parent} -> {calib.child} ({hcfg.kind}) -> {path}", ["what", "value"], [
        ("xyz (m)", " ".join(f"{x:.4f}" for x in p[:3])),
        ("quaternion xyzw", " ".join(f"{x:.5f}" for x in p[3:])),
        ("method", calib.method),
        ("held-out consistency", f"{calib.residuals['heldout_translation_mm']:.2f} mm / {calib.residuals['heldout_rotation_deg']:.3f} deg (good: < 5 mm / 1 deg)"),
        ("rotation spread", f"{result.rotation_spread_deg:.0f} deg"),
        ("calibration id", calib.calibration_id),
    ])
    if previous is not None and previous.kind == calib.kind:
        mm, deg = transform_delta(previous.T_parent_optical, calib.T_parent_optical)
        print(f"vs the previous calibration {previous.calibration_id}: {mm:.1f} mm / {deg:.2f} deg")
    for w in result.warnings + result.dropped:
        print(f"warning: {w}")
    return 0


# ---------------------------------------------------------------------------------------------- check
def run_check(cfg: DictConfig) -> int:
    board = _board(cfg)
    c = cfg.check
    hp = handeye_path(cfg.dir, cfg.camera)
    if not hp.exists():
        raise FileNotFoundError(f"{hp} is missing: nothing to check against; run `wvl calibrate handeye camera={cfg.camera}` first")
    calib = load_handeye(hp)
    _, intr = _load_intrinsics_for(cfg)
    thresholds = DriftThresholds(float(c.max_translation_mm), float(c.max_rotation_deg))
    src = SourceConfig(**_container(cfg, "source"))
    views: list[tuple[np.ndarray, np.ndarray | None]] = []
    fixed_ee = pose_to_matrix(c.ee_pose) if c.ee_pose is not None else None
    if src.live:
        arm = import_factory(cfg.handeye.arm_factory, "handeye.arm_factory")() if cfg.handeye.arm_factory else None
        camera = open_camera(src, cfg.camera)
        camera.connect()
        if arm is not None:
            arm.connect()
        try:
            for _ in range(int(c.views)):
                ee = pose_to_matrix(arm.read_state().ee_pose) if arm is not None else fixed_ee
                views.append((camera.read().rgb, ee))
        finally:
            camera.disconnect()
            if arm is not None:
                arm.disconnect()
    else:
        views = [(rgb, fixed_ee) for _, rgb in iter_images(src, cfg.camera)]
    if c.save_reference:
        if calib.kind != "eye_to_hand" or fixed_ee is not None:
            raise ValueError("check.save_reference: only for a fixed camera (eye_to_hand) looking at a board fixed in "
                             "the scene (no check.ee_pose)")
        det = BoardDetector(board)
        poses = []
        for rgb, _ in views:
            try:
                poses.append(estimate_pose(det.detect(rgb), intr.K, intr.dist)[0])
            except CalibrationError:
                continue
        if not poses:
            raise CalibrationError("check.save_reference: the board is in none of the views")
        ref = calib.T_parent_optical @ mean_transform(poses)
        path = save_drift_reference(cfg.dir, calib, ref)
        print(f"reference board pose saved to {path} ({len(poses)} views); later `wvl calibrate check` runs compare against it")
        return 0
    reference = load_drift_reference(cfg.dir, calib) if calib.kind == "eye_to_hand" and fixed_ee is None else None
    report = check_drift(calib, intr, board, views, thresholds, reference)
    print_table(f"drift check {cfg.camera} (calibration {report.calibration_id})", ["what", "value"], [
        ("moved", "YES" if report.moved else "no"),
        ("translation", f"{report.translation_mm:.2f} mm (threshold {report.threshold_mm:g})"),
        ("rotation", f"{report.rotation_deg:.3f} deg (threshold {report.threshold_deg:g})"),
        ("views", f"{report.n_views} used, {len(report.skipped)} without the board"),
        ("board fit", f"{report.reprojection_px:.2f} px"),
    ])
    print(report.message)
    out = Path(c.report) if c.report else Path(cfg.dir) / f"{cfg.camera}.drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report.to_dict(), "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    return EXIT_MOVED if report.moved else 0
