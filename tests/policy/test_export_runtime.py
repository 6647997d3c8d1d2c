"""Export to ONNX and the robot's PolicyRuntime: agreement with PyTorch, refusal of lying or broken artifacts,
swaps only at episode boundaries, rollback."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from learning.cli import main as wvl
from learning.policy.export import ExportError, export_policy
from robot.policy_artifact import MODEL_FILE, ArtifactError, PolicyManifest, read_artifact, write_artifact
from robot.policy_runtime import (ObservationError, PolicyOutputError, PolicyRuntime, PolicyRuntimeError, RigSpec,
                                  available_providers, validate_artifact)
from tests.policy.conftest import INSTRUCTION, tiny_compact

RIG = RigSpec(camera="front", image_size=(16, 16))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("art") / "v1"
    export_policy(tiny_compact(seed=1), out, version="v1", check_inputs=8)
    return out


def _copy(artifact: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in artifact.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _rewrite_manifest(folder: Path, **changes) -> None:
    """A manifest that lies but carries valid hashes (re-signed), so only the content checks can catch it."""
    d = json.loads((folder / "manifest.json").read_text())
    d.update(changes)
    write_artifact(folder, PolicyManifest.from_dict(d))


def test_export_writes_a_verified_artifact_that_agrees_with_torch(artifact):
    m = read_artifact(artifact)
    assert m.policy_version == "v1" and m.image_size == (16, 16) and m.chunk_length == 8 and m.action_dim == 7
    assert m.instruction == INSTRUCTION and len(m.instruction_tokens) == 5
    assert m.inputs == {"image": {"shape": [1, 16, 16, 3], "dtype": "uint8"},
                        "instruction_tokens": {"shape": [1, 5], "dtype": "int64"}}
    assert m.outputs == {"action_chunk": {"shape": [1, 8, 7], "dtype": "float32"}}
    check = m.extra["onnx_check"]
    assert check["inputs"] == 8 and check["max_abs_diff"] <= 1e-6
    assert m.normalization["image_mean"] == [0.4, 0.4, 0.4] and m.normalization["inside_graph"]


def test_runtime_matches_the_torch_policy(artifact):
    policy = tiny_compact(seed=1)
    rt = PolicyRuntime(RIG)
    rt.load(artifact)
    assert rt.reset().policy_version == "v1" and rt.active_providers[-1] == "CPUExecutionProvider"
    imgs = np.random.default_rng(5).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    for img in imgs:
        got = rt.act(img)
        assert got.shape == (8, 7) and got.dtype == np.float32
        np.testing.assert_allclose(got, policy.act(img, INSTRUCTION)[0].numpy(), atol=1e-6)
    assert rt.bad_outputs == 0 and len(rt.latencies_ms) == 6


def test_a_manifest_that_lies_about_the_image_size_is_refused(artifact, tmp_path):
    lie = _copy(artifact, tmp_path / "lie")
    _rewrite_manifest(lie, image_size=[32, 32])
    with pytest.raises(ArtifactError, match="'image_size'.*rig's camera gives \\[16, 16\\]"):
        validate_artifact(lie, RIG)
    # On a rig that really has 32x32 frames, the graph itself gives the lie away.
    with pytest.raises(ArtifactError, match="'image_size': says \\[32, 32\\], but the graph's input 'image'"):
        validate_artifact(lie, RigSpec(image_size=(32, 32)))


def test_a_manifest_that_lies_about_the_action_dim_is_refused(artifact, tmp_path):
    lie = _copy(artifact, tmp_path / "lie")
    _rewrite_manifest(lie, action_dim=6, action_low=[-1.0] * 6, action_high=[1.0] * 6)
    with pytest.raises(ArtifactError, match="'action_dim'.*6-d actions, this rig takes 7-d"):
        validate_artifact(lie, RIG)
    six = RigSpec(image_size=(16, 16), action_dim=6, action_low=(-1.0,) * 6, action_high=(1.0,) * 6)
    with pytest.raises(ArtifactError, match="'action_dim': says 6, but the graph's output 'action_chunk'"):
        validate_artifact(lie, six)


def test_wrong_camera_rate_newer_version_and_tampering_are_refused(artifact, tmp_path):
    with pytest.raises(ArtifactError, match="'camera'"):
        validate_artifact(artifact, RigSpec(camera="wrist", image_size=(16, 16)))
    with pytest.raises(ArtifactError, match="'control_hz'"):
        validate_artifact(artifact, RigSpec(image_size=(16, 16), control_hz=15.0))
    newer = _copy(artifact, tmp_path / "newer")
    d = json.loads((newer / "manifest.json").read_text())
    d["manifest_version"] = 3
    (newer / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="'manifest_version': 3 is newer"):
        validate_artifact(newer, RIG)
    tampered = _copy(artifact, tmp_path / "tampered")
    with open(tampered / MODEL_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        validate_artifact(tampered, RIG)


def _constant_graph_artifact(folder: Path, value: float, version: str = "bad") -> Path:
    """A well-formed artifact whose graph outputs ``value`` everywhere (0/0 for NaN)."""
    folder.mkdir(parents=True)
    num = helper.make_tensor("num", TensorProto.FLOAT, [1, 8, 7], [0.0 if np.isnan(value) else value] * 56)
    den = helper.make_tensor("den", TensorProto.FLOAT, [1, 8, 7], [0.0 if np.isnan(value) else 1.0] * 56)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["n"], value=num), helper.make_node("Constant", [], ["d"], value=den),
         helper.make_node("Div", ["n", "d"], ["action_chunk"])],
        "constant",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 16, 16, 3]),
         helper.make_tensor_value_info("instruction_tokens", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("action_chunk", TensorProto.FLOAT, [1, 8, 7])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), folder / MODEL_FILE)
    write_artifact(folder, PolicyManifest(
        policy_version=version, camera="front", image_size=(16, 16), instruction=INSTRUCTION, instruction_tokens=(1, 2, 3, 4, 5),
        chunk_length=8, action_low=(-1.0,) * 7, action_high=(1.0,) * 7, control_hz=10.0,
        inputs={"image": {"shape": [1, 16, 16, 3], "dtype": "uint8"}, "instruction_tokens": {"shape": [1, 5], "dtype": "int64"}},
        outputs={"action_chunk": {"shape": [1, 8, 7], "dtype": "float32"}}))
    return folder


def test_a_nan_producing_artifact_is_refused_and_the_robot_keeps_its_policy(artifact, tmp_path):
    nan = _constant_graph_artifact(tmp_path / "nan", float("nan"))
    with pytest.raises(ArtifactError, match="'outputs'.*NaN"):
        validate_artifact(nan, RIG)
    too_big = _constant_graph_artifact(tmp_path / "big", 2.0)
    with pytest.raises(ArtifactError, match=r"outside \[action_low, action_high\]"):
        validate_artifact(too_big, RIG)
    rt = PolicyRuntime(RIG)
    rt.load(artifact)
    rt.reset()
    with pytest.raises(ArtifactError):
        rt.stage(nan)
    assert rt.reset().policy_version == "v1" and rt.pending_version is None
    assert validate_artifact(_constant_graph_artifact(tmp_path / "ok", 0.5, "ok"), RIG).policy_version == "ok"


def test_swaps_happen_only_at_episode_start_and_roll_back(artifact, tmp_path):
    v2 = tmp_path / "v2"
    export_policy(tiny_compact(seed=2), v2, version="v2", check_inputs=2)
    img = np.full((16, 16, 3), 90, np.uint8)
    rt = PolicyRuntime(RIG)
    with pytest.raises(PolicyRuntimeError, match="no policy loaded"):
        rt.act(img)
    rt.load(artifact)
    rt.reset()
    a1 = rt.act(img)
    assert rt.stage(v2).policy_version == "v2"
    assert rt.version == "v1" and rt.pending_version == "v2"
    np.testing.assert_array_equal(rt.act(img), a1)  # mid-episode: still v1
    assert rt.reset().policy_version == "v2" and rt.previous_version == "v1"
    a2 = rt.act(img)
    assert rt.rollback().policy_version == "v1"
    assert rt.version == "v2"  # the rollback also waits for the episode boundary
    assert rt.reset().policy_version == "v1"
    np.testing.assert_array_equal(rt.act(img), a1)
    assert not np.array_equal(a1, a2)


def test_act_checks_the_observation_and_flags_bad_outputs(artifact):
    rt = PolicyRuntime(RIG)
    rt.load(artifact)
    with pytest.raises(ObservationError, match=r"takes \(16, 16, 3\) uint8 RGB from camera 'front', got \(32, 32, 3\)"):
        rt.act(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ObservationError, match="float32"):
        rt.act(np.zeros((16, 16, 3), np.float32))
    # A policy that turns NaN at run time: passed on (the safety filter holds on NaN) and counted, or raised when strict.
    rt._active.run = lambda image, state=None: np.full((8, 7), np.nan, np.float32)
    assert np.isnan(rt.act(np.zeros((16, 16, 3), np.uint8))).all() and rt.bad_outputs == 1
    rt.strict = True
    with pytest.raises(PolicyOutputError, match="NaN"):
        rt.act(np.zeros((16, 16, 3), np.uint8))


def test_the_runtime_is_the_runner_s_chunk_policy(artifact):
    from robot.arms.base import ArmState
    from robot.cameras.base import Frame
    from robot.policy_source import PolicySource
    from robot.runner import Observation

    rt = PolicyRuntime(RIG)
    rt.load(artifact)
    src = PolicySource(rt, camera="front", image_size=(16, 16))
    src.reset(INSTRUCTION)  # calls rt.reset(): the episode boundary
    obs = Observation(frames={"front": Frame(rgb=np.zeros((48, 48, 3), np.uint8), stamp=0.0)},
                      state=ArmState(np.zeros(9), np.zeros(7), 1.0, 0.0), time=0.0, instruction=INSTRUCTION, step=0)
    assert src.next_chunk(obs).shape == (8, 7)


def test_validate_artifact_is_the_link_s_validate_hook(artifact):
    hook = functools.partial(validate_artifact, rig=RIG)
    assert hook(artifact).policy_version == "v1"
    assert available_providers()[-1] == "CPUExecutionProvider"


def test_export_refuses_an_existing_folder_and_the_hf_adapter(artifact):
    with pytest.raises(FileExistsError, match="exists"):
        export_policy(tiny_compact(), artifact, version="again")
    with pytest.raises(ExportError, match="compact VLA"):
        export_policy(torch.nn.Linear(2, 2), artifact.parent / "x", version="x")


def test_wvl_export_command(tmp_path, capsys):
    tiny_compact(seed=3).save_pretrained(tmp_path / "p")
    rc = wvl(["export", f"policy={tmp_path / 'p'}", f"out={tmp_path / 'a'}", "version=cli-1", "check_inputs=2"])
    assert rc == 0 and read_artifact(tmp_path / "a").policy_version == "cli-1"
    assert "max abs diff" in capsys.readouterr().out


def test_robot_side_imports_no_torch():
    code = "import sys, robot.policy_runtime, robot.policy_artifact; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_gaussian_head_exports_and_agrees(tmp_path):
    m = export_policy(tiny_compact(seed=4, action_head="gaussian"), tmp_path / "g", version="g1", check_inputs=4)
    assert m.extra["onnx_check"]["max_abs_diff"] <= 1e-6
    assert validate_artifact(tmp_path / "g", RIG).policy_version == "g1"


# ---------------------------------------------------------------------------------------------- robot state input
STATE = ("ee_x", "ee_y", "ee_z", "gripper")


def _state_policy(seed: int = 7):
    """A tiny policy with a state input whose chunk visibly depends on the state (a large state projection)."""
    p = tiny_compact(seed=seed, state_features=list(STATE), state_mean=[0.0, 0.0, 0.2, 0.5], state_std=[0.05, 0.05, 0.05, 0.5])
    with torch.no_grad():
        for layer in p.state_proj:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(50.0)
    return p.eval()


@pytest.fixture(scope="module")
def state_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("state") / "s1"
    export_policy(_state_policy(), out, version="s1", check_inputs=8)
    return out


def test_a_state_policy_gets_the_arm_s_state_through_the_onnx_runtime(state_artifact):
    """The arm's ArmState reaches the graph: runner observation -> PolicySource -> PolicyRuntime -> ONNX, and the
    chunk equals the torch policy's for that state (and changes when the arm moves)."""
    from robot.arms.fake import KinematicArm
    from robot.cameras.base import Frame
    from robot.policy_source import PolicySource
    from robot.runner import Observation
    from robot.state import state_vector

    m = read_artifact(state_artifact)
    assert m.state == STATE and m.inputs["state"] == {"shape": [1, 4], "dtype": "float32"}
    assert m.normalization["state"]["features"] == list(STATE) and m.extra["onnx_check"]["max_abs_diff"] <= 1e-6
    policy = _state_policy()
    rt = PolicyRuntime(RIG)
    rt.load(state_artifact)
    src = PolicySource(rt, camera="front")
    src.reset(INSTRUCTION)
    arm = KinematicArm()
    arm.connect()
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    chunks = []
    for step in range(3):
        state = arm.read_state()
        obs = Observation(frames={"front": Frame(rgb=img, stamp=0.0)}, state=state, time=0.0, instruction=INSTRUCTION, step=step)
        chunk = src.next_chunk(obs)
        want = policy.act(img, INSTRUCTION, states=state_vector(STATE, state)[None])[0].numpy()
        np.testing.assert_allclose(chunk, want, atol=1e-6)
        chunks.append(chunk)
        arm.send_action(np.array([1.0, -1.0, -1.0, 0, 0, 0, -1.0], np.float32))  # 5 cm per axis, gripper closing
    assert not np.array_equal(chunks[0], chunks[2])  # same image, another state: another chunk


def test_the_runtime_refuses_a_state_the_graph_or_the_rig_does_not_have(state_artifact, tmp_path):
    lie = _copy(state_artifact, tmp_path / "lie")
    _rewrite_manifest(lie, state=["ee_x", "ee_y"], inputs={**read_artifact(state_artifact).inputs, "state": {"shape": [1, 2], "dtype": "float32"}})
    with pytest.raises(ArtifactError, match=r"'inputs': 'state' declared shape \[1, 2\], the graph has \[1, 4\]"):
        validate_artifact(lie, RIG)
    lie2 = _copy(state_artifact, tmp_path / "lie2")
    _rewrite_manifest(lie2, state=["ee_x", "ee_y"], inputs={k: v for k, v in read_artifact(state_artifact).inputs.items() if k != "state"})
    with pytest.raises(ArtifactError, match=r"'state': lists 2 features \['ee_x', 'ee_y'\], but the graph's input 'state' is \[1, 4\]"):
        validate_artifact(lie2, RIG)
    no_state = _copy(state_artifact, tmp_path / "no_state")  # a manifest that hides the state input
    _rewrite_manifest(no_state, state=[], inputs={k: v for k, v in read_artifact(state_artifact).inputs.items() if k != "state"})
    with pytest.raises(ArtifactError, match=r"'state': the graph's inputs are \['image', 'instruction_tokens', 'state'\]"):
        validate_artifact(no_state, RIG)
    # A rig whose arm reports no gripper opening cannot run a policy that needs it; the message names both.
    with pytest.raises(ArtifactError, match=r"'state': policy takes the robot state \['ee_x', 'ee_y', 'ee_z', 'gripper'\], "
                                            r"this rig's arm supplies \['ee_x', 'ee_y', 'ee_z'\] \(missing \['gripper'\]\)"):
        validate_artifact(state_artifact, RigSpec(camera="front", image_size=(16, 16), state=("ee_x", "ee_y", "ee_z")))
    rt = PolicyRuntime(RIG)
    rt.load(state_artifact)
    rt.reset()
    with pytest.raises(ObservationError, match="takes the robot state"):
        rt.act(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ObservationError, match=r"takes 4 features .* got shape \(3,\)"):
        rt.act(np.zeros((16, 16, 3), np.uint8), np.zeros(3, np.float32))


def test_an_image_only_manifest_of_version_1_still_loads(artifact, tmp_path):
    old = _copy(artifact, tmp_path / "v1")
    d = json.loads((old / "manifest.json").read_text())
    d.pop("state")
    d["manifest_version"] = 1
    (old / "manifest.json").write_text(json.dumps(d))
    m = validate_artifact(old, RIG)
    assert m.state == () and m.manifest_version == 1


def test_policies_check_their_state_input():
    from learning.policy.base import PolicyInputError

    p, img = _state_policy(), np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(PolicyInputError, match="needs the robot state"):
        p.act(img, INSTRUCTION)
    with pytest.raises(PolicyInputError, match=r"expected shape \(2, 4\)"):
        p.act(img, INSTRUCTION, states=np.zeros((2, 3), np.float32))
    with pytest.raises(PolicyInputError, match="takes no robot state"):
        tiny_compact().act(img, INSTRUCTION, states=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="unknown state feature"):
        tiny_compact(state_features=["ee_yaw"])


def test_mlp_trunk_policy_exports_and_agrees(tmp_path):
    """trunk=mlp (keypoints + state + instruction -> one MLP -> all action tokens) is the same kind of artifact."""
    p = tiny_compact(seed=5, trunk="mlp", patch_tokens=False, keypoint_level=0, state_features=list(STATE),
                     state_mean=[0.0, 0.0, 0.2, 0.5], state_std=[0.05, 0.05, 0.05, 0.5])
    m = export_policy(p, tmp_path / "m", version="m1", check_inputs=4)
    assert m.extra["onnx_check"]["max_abs_diff"] <= 1e-6
    assert validate_artifact(tmp_path / "m", RIG).policy_version == "m1"
