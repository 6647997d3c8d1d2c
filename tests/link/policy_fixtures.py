"""A small real ONNX policy (built with onnx.helper) and a validator that runs it with onnxruntime, standing in for
`robot/policy_runtime.py` in the link tests and the link benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot.policy_artifact import MODEL_FILE, ArtifactError, PolicyManifest, read_artifact, write_artifact

H = W = 16
K = 4
ACTION_DIM = 7


def make_policy(folder: str | Path, version: str, *, pad_bytes: int = 0, scale: float = 1.0, seed: int = 0) -> PolicyManifest:
    """Write an artifact: actions (1, K, 7) = scale * tanh(w[:K*7] * mean(image) / 255). ``pad_bytes`` grows the weight
    initializer (a 50 MB artifact for the benchmark); ``scale`` > 1 makes outputs leave [-1, 1] (a policy the
    validator must refuse); ``scale=nan`` makes them NaN."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = max(K * ACTION_DIM, pad_bytes // 4)
    w = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["image"], ["img_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["img_f"], ["mean"], keepdims=0),
        helper.make_node("Slice", ["w", "start", "stop"], ["w_used"]),
        helper.make_node("Mul", ["w_used", "mean"], ["wm"]),
        helper.make_node("Mul", ["wm", "inv255"], ["z"]),
        helper.make_node("Tanh", ["z"], ["t"]),
        helper.make_node("Mul", ["t", "scale"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["actions"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([K * ACTION_DIM], np.int64), "stop"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
        numpy_helper.from_array(np.array([1, K, ACTION_DIM], np.int64), "shape"),
    ]
    graph = helper.make_graph(nodes, "test-policy", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, H, W, 3])],
                              [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, K, ACTION_DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / MODEL_FILE))
    return write_artifact(folder, PolicyManifest(
        policy_version=version, camera="front", image_size=(H, W), instruction="pick up the red cube",
        instruction_tokens=(1, 2, 3), chunk_length=K, action_low=(-1.0,) * ACTION_DIM, action_high=(1.0,) * ACTION_DIM,
        control_hz=10.0, inputs={"image": {"shape": [1, H, W, 3], "dtype": "uint8"}},
        outputs={"actions": {"shape": [1, K, ACTION_DIM], "dtype": "float32"}},
    ))


def ort_validate(folder: Path) -> PolicyManifest:
    """What the policy runtime checks before a swap: manifest + hashes, graph inputs/outputs as declared, a smoke
    inference on a grey image, outputs finite and within [action_low, action_high]."""
    import onnxruntime as ort

    m = read_artifact(folder)
    sess = ort.InferenceSession(str(Path(folder) / MODEL_FILE), providers=["CPUExecutionProvider"])
    names_in = {i.name for i in sess.get_inputs()}
    if names_in != set(m.inputs):
        raise ArtifactError(f"graph inputs {sorted(names_in)} differ from the manifest's {sorted(m.inputs)}")
    feed = {name: np.full(spec["shape"], 128, dtype=spec["dtype"]) for name, spec in m.inputs.items()}
    (out,) = sess.run(["actions"], feed)
    if out.shape != (1, m.chunk_length, m.action_dim):
        raise ArtifactError(f"output shape {out.shape} != (1, {m.chunk_length}, {m.action_dim})")
    if not np.all(np.isfinite(out)):
        raise ArtifactError("smoke inference produced NaN/inf")
    if np.any(out < np.array(m.action_low)) or np.any(out > np.array(m.action_high)):
        raise ArtifactError(f"smoke inference left the action bounds (range {out.min():.2f}..{out.max():.2f})")
    return m
