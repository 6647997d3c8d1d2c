"""`wvl robot`: the one-process robot, on the dry rig (kinematic arm + synthetic camera) with a real ONNX
policy artifact, and on the simulated robot (ManiSkill) with the scripted operator's SANS session."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from learning.cli import main
from robot.policy_artifact import MODEL_FILE, PolicyManifest, write_artifact
from robot.sinks import read_episode_file


def _artifact(folder: Path) -> Path:
    """A valid policy artifact whose graph outputs a constant chunk: +x at 0.3, gripper open."""
    folder.mkdir(parents=True)
    chunk = np.tile([0.3, 0, 0, 0, 0, 0, 1.0], (4, 1)).astype(np.float32)[None]
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["action_chunk"], value=helper.make_tensor("c", TensorProto.FLOAT, [1, 4, 7], chunk.ravel()))],
        "constant",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 64, 64, 3]),
         helper.make_tensor_value_info("instruction_tokens", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("action_chunk", TensorProto.FLOAT, [1, 4, 7])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), folder / MODEL_FILE)
    write_artifact(folder, PolicyManifest(
        policy_version="cli-test", camera="front", image_size=(64, 64), instruction="move the gripper", instruction_tokens=(1, 2, 3),
        chunk_length=4, action_low=(-1.0,) * 7, action_high=(1.0,) * 7, control_hz=10.0,
        inputs={"image": {"shape": [1, 64, 64, 3], "dtype": "uint8"}, "instruction_tokens": {"shape": [1, 3], "dtype": "int64"}},
        outputs={"action_chunk": {"shape": [1, 4, 7], "dtype": "float32"}}))
    return folder


def test_wvl_robot_run_policy_on_the_dry_rig(tmp_path):
    art = _artifact(tmp_path / "policy")
    out = tmp_path / "outbox"
    rc = main(["robot", "run", "rig=dry", "source=policy", f"policy.artifact={art}", "episodes=2", "runner.max_steps=6",
               "runner.hz=10", f"outbox={out}"])
    assert rc == 0
    eps = sorted((read_episode_file(p) for p in out.glob("*.episode")), key=lambda e: e.timestamps[0])
    assert len(eps) == 2
    for ep in eps:
        assert ep.source == "policy" and ep.policy_version == "cli-test" and ep.outcome == "unlabeled"
        assert len(ep) == 7 and ep.images["front"].shape == (7, 64, 64, 3)
        assert ep.actions[:6, 0].max() == pytest.approx(0.3)  # 3 cm steps (sim safety limits allow 10 cm)
        assert ep.info["control"]["realtime"] is True and ep.info["safety"]["steps"] == 6


def test_wvl_robot_bad_input_is_one_line(tmp_path, capsys):
    assert main(["robot", "run", "rig=dry", "source=policy", f"outbox={tmp_path}"]) == 2
    assert "policy.artifact" in capsys.readouterr().err
    assert main(["robot", "run", "rig=dry", "safety.max_speed=3"]) == 2
    assert main(["robot", "run", "rig=dry", "safety.gripper_mode=wiggle", f"outbox={tmp_path}"]) == 2
    assert "gripper_mode" in capsys.readouterr().err
    assert main(["robot", "fly"]) == 2


@pytest.mark.sim
@pytest.mark.slow
def test_wvl_robot_collect_scripted_operator_on_the_simulated_robot(tmp_path):
    """The SANS session driven by the scripted operator: labelled episodes whose labels match the simulator."""
    out = tmp_path / "outbox"
    rc = main(["robot", "collect", "device=scripted", "session.success=1", "session.near_success=1", "session.max_attempts=6",
               "sim.max_steps=50", "runner.max_steps=50", f"outbox={out}"])
    assert rc == 0
    eps = [read_episode_file(p) for p in out.glob("*.episode")]
    labels = [e.outcome for e in eps]
    # A near-success attempt that succeeds anyway (the offset grasp still caught the cube) is labelled a success,
    # as an operator would label it, and the session asks again: one near-success, one or more successes.
    assert labels.count("near_success") == 1 and labels.count("success") >= 1 and set(labels) == {"success", "near_success"}
    for e in eps:
        assert e.source == "teleop" and (e.info["sans"]["requested"] == e.outcome or e.outcome == "success")
        assert e.info["sans"]["sim_success"] == (e.outcome == "success")  # the label matches what the simulator saw
        assert e.rewards[-1] == (e.outcome == "success")
    near = next(e for e in eps if e.outcome == "near_success")
    assert near.info["sans"]["perturbation"] in ("place_offset", "grasp_offset")


def test_settings_are_checked_before_the_rig_or_link_starts(tmp_path, capsys, monkeypatch):
    """A missing artifact or key file fails at once, naming the key, before a simulator or socket exists."""
    import robot.main as robot_main

    def no_rig(cfg):
        raise AssertionError("the rig was built before the settings were checked")

    monkeypatch.setattr(robot_main, "build_rig", no_rig)
    monkeypatch.setattr(robot_main, "build_sink", lambda cfg: (_ for _ in ()).throw(AssertionError("sink built first")))
    assert main(["robot", "run", "rig=sim", "source=policy", "sink=link", f"outbox={tmp_path}"]) == 2
    assert "policy.artifact" in capsys.readouterr().err
    assert main(["robot", "run", "rig=sim", "source=policy", f"policy.artifact={tmp_path / 'nothing'}", f"outbox={tmp_path}"]) == 2
    assert "manifest.json" in capsys.readouterr().err
    art = _artifact(tmp_path / "policy")
    assert main(["robot", "run", "rig=sim", "source=policy", f"policy.artifact={art}", "sink=link",
                 f"link.secret_key={tmp_path / 'keys/robot-1.key_secret'}", f"outbox={tmp_path}"]) == 2
    assert "link.secret_key" in capsys.readouterr().err
    assert main(["robot", "deploy", "rig=sim", f"link.secret_key={tmp_path / 'none.key_secret'}", f"outbox={tmp_path}"]) == 2
    assert "link.secret_key" in capsys.readouterr().err


@pytest.mark.sim
def test_robot_episodes_default_to_the_simulators_length(tmp_path):
    """`wvl robot run` on the simulated robot cuts a failing episode where `wvl eval-policy` does (40 steps on
    PickCube; it was 60)."""
    from robot.sim.maniskill import ManiSkillConfig

    art = _artifact(tmp_path / "policy")  # slides along +x with the gripper open: never succeeds
    out = tmp_path / "outbox"
    assert main(["robot", "run", "rig=sim", "source=policy", f"policy.artifact={art}", "episodes=1", f"outbox={out}"]) == 0
    (ep,) = [read_episode_file(p) for p in out.glob("*.episode")]
    assert ep.outcome != "success" and len(ep) == ManiSkillConfig().max_steps + 1  # + the final frame


def test_idle_deploy_says_what_it_waits_for(tmp_path, caplog):
    """Pointed at a dead learner, `wvl robot deploy` reports the learner unreachable (with the key hint) instead
    of waiting silently (README issue 21, item 3); connected, it says it waits for a new policy."""
    import socket

    from robot import wire
    from robot.deploy import waiting_status

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level("INFO", logger="robot.deploy"):
        rc = main(["robot", "deploy", "rig=dry", "link.plaintext=true", "link.robot_id=robot-7",
                   f"link.endpoint=tcp://127.0.0.1:{port}", "deploy.max_idle_s=1.2", "deploy.status_every_s=0.4", f"deploy.policies={tmp_path / 'inbox'}",
                   f"outbox={tmp_path / 'outbox'}"])
    assert rc == 0
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) >= 2 and f"tcp://127.0.0.1:{port}" in said[0] and "running: none yet" in said[0]
    keys = wire.RobotKeys(b"p" * 40, b"s" * 40, b"l" * 40, "robot-7")
    assert "robot-7.key on the learner's allow list" in waiting_status({"connected": False}, "tcp://h:1", keys, 65, 65)
    up = waiting_status({"connected": True, "running_version": "v3"}, "tcp://h:1", keys, 0, 12)
    assert "waiting for a new policy" in up and "v3" in up
