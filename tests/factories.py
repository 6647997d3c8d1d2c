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


def reach_policy_artifact(folder, target=(0.1, -0.05, 0.25), gain: float = 4.0, image_size: int = 64, chunk: int = 4,
                          version: str = "reach-1", hz: float = 10.0):
    """A policy artifact (ONNX, no torch) with the robot-state input (ee_x, ee_y, ee_z, gripper): every step of its
    chunk is ``clip(gain * (target - ee_xyz), -1, 1)``, no rotation, gripper open -- a P controller that reaches
    ``target`` only if the arm's state really arrives through the runtime. The image is an input (the runtime
    feeds it) that the graph does not use."""
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    from robot.policy_artifact import MODEL_FILE, PolicyManifest, write_artifact

    folder = Path(folder)
    folder.mkdir(parents=True)
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Slice", ["state", "zero", "three", "one"], ["xyz"]),  # (1, 3) state[:, 0:3]
        helper.make_node("Sub", ["target", "xyz"], ["err"]),
        helper.make_node("Mul", ["err", "gain"], ["p"]),
        helper.make_node("Clip", ["p", "lo", "hi"], ["xyz_cmd"]),
        helper.make_node("Concat", ["xyz_cmd", "rest"], ["step"], axis=1),  # (1, 7)
        helper.make_node("Unsqueeze", ["step", "one"], ["step3"]),  # (1, 1, 7)
        helper.make_node("Tile", ["step3", "reps"], ["action_chunk"]),  # (1, K, 7)
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]), helper.make_tensor("three", TensorProto.INT64, [1], [3]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]), helper.make_tensor("target", f, [1, 3], list(target)),
        helper.make_tensor("gain", f, [], [gain]), helper.make_tensor("lo", f, [], [-1.0]), helper.make_tensor("hi", f, [], [1.0]),
        helper.make_tensor("rest", f, [1, 4], [0.0, 0.0, 0.0, 1.0]), helper.make_tensor("reps", TensorProto.INT64, [3], [1, chunk, 1]),
    ]
    graph = helper.make_graph(
        nodes, "reach",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, image_size, image_size, 3]),
         helper.make_tensor_value_info("instruction_tokens", TensorProto.INT64, [1, 3]),
         helper.make_tensor_value_info("state", f, [1, 4])],
        [helper.make_tensor_value_info("action_chunk", f, [1, chunk, 7])], initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), folder / MODEL_FILE)
    write_artifact(folder, PolicyManifest(
        policy_version=version, camera="front", image_size=(image_size, image_size), instruction="move the gripper to the target",
        instruction_tokens=(1, 2, 3), chunk_length=chunk, action_low=(-1.0,) * 7, action_high=(1.0,) * 7, control_hz=hz,
        state=("ee_x", "ee_y", "ee_z", "gripper"),
        normalization={"state": {"features": ["ee_x", "ee_y", "ee_z", "gripper"], "mean": [0.0, 0.0, 0.3, 1.0]}},
        inputs={"image": {"shape": [1, image_size, image_size, 3], "dtype": "uint8"},
                "instruction_tokens": {"shape": [1, 3], "dtype": "int64"}, "state": {"shape": [1, 4], "dtype": "float32"}},
        outputs={"action_chunk": {"shape": [1, chunk, 7], "dtype": "float32"}}))
    return folder
