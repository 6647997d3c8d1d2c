"""Camera calibration: ChArUco intrinsics, hand-eye (eye-in-hand / eye-to-hand), drift check. No torch.

What the rest of the stack calls:

- `calibration.files.load_camera_calibration(dir, camera)` -> intrinsics + hand-eye of one camera;
  `load_rig_calibration(dir)` for all; `episode_calibration_id(dir)` -> what a recorder stores in
  ``Episode.info["calibration_id"]``.
- `calibration.drift.check_drift(calib, intrinsics, board, views) -> DriftReport(moved, translation_mm, ...)`.
- `calibration.selection.indices_for_calibration(store, current_id, compatible_ids(dir, camera))` -> the
  episodes recorded with the camera where it is now (the world model's training set).

The `wvl calibrate board|intrinsics|handeye|check` command lives in `calibration.cli`; the ROS 2 static-TF
publisher in `robot.nodes.calibration_tf`.
"""
