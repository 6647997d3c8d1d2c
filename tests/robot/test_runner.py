"""The episode runner: sources, safety written into the episode, success labelling, device failures."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from robot.arms.fake import KinematicArm
from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig
from robot.cameras.replay import EpisodeReplayCamera
from robot.control import SimulatedClock
from robot.episode import Episode
from robot.policy_source import PolicySource
from robot.runner import EpisodeRunner, RunnerConfig, SourceStatus
from robot.safety import SafetyConfig, SafetyFilter, SafetyFlag
from robot.sinks import FolderSink, read_episode_file
from tests.factories import KINEMATIC_SAFETY, random_episode


class ConstantSource:
    def __init__(self, chunk):
        self.chunk = np.asarray(chunk, np.float32)
        self.calls = 0

    def reset(self, instruction):
        self.instruction = instruction

    def next_chunk(self, obs):
        self.calls += 1
        assert set(obs.frames) == {"front"} and obs.state.ee_pose.shape == (7,)
        return self.chunk


def make_runner(cfg=RunnerConfig(hz=10, max_steps=20, source_kind="policy"), cams=None, safety=None):
    arm = KinematicArm()
    cams = cams or {"front": EpisodeReplayCamera(random_episode(T=6, H=16, W=16), loop=True)}
    runner = EpisodeRunner(arm, cams, safety or SafetyFilter(SafetyConfig(ramp_steps=1, **KINEMATIC_SAFETY), arm.limits), cfg, SimulatedClock())
    runner.connect()
    return runner, arm


def test_runner_plays_chunks_at_the_rate_and_records_what_was_sent():
    runner, arm = make_runner(RunnerConfig(hz=10, max_steps=12, replan_every=2))
    chunk = np.tile([0.1, 0, 0, 0, 0, 0, 1], (4, 1))
    src = ConstantSource(chunk)
    res = runner.run(src, "pick up the cube", policy_version="v3", loop_iteration=1)
    ep = res.episode
    assert res.end_reason == "max_steps" and src.calls == 6  # replanned every 2 steps
    assert len(ep) == 13  # 12 steps + the closing observation
    np.testing.assert_allclose(np.diff(ep.timestamps), 0.1, atol=1e-9)  # simulated clock: exact periods
    np.testing.assert_allclose(ep.actions[:12], chunk[:1].repeat(12, 0), atol=1e-6)
    np.testing.assert_allclose(ep.actions[12, :6], 0)  # the closing step holds
    assert ep.source == "policy" and ep.policy_version == "v3" and ep.loop_iteration == 1 and ep.outcome == "unlabeled"
    assert ep.info["safety"]["interventions"] == 0 and ep.info["control"]["overruns"] == 0
    for k in ("safety_flags", "t_observe", "t_infer", "t_act", "loop_lateness", "camera_skew", "action_commanded"):
        assert ep.extras[k].shape[0] == len(ep)
    assert arm.xyz[0] == pytest.approx(0.0 + 12 * 0.1 * 0.05)


def test_interventions_are_written_into_the_episode():
    runner, arm = make_runner(RunnerConfig(hz=10, max_steps=6))
    bad = np.array([[0.1, 0, 0, 0, 0, 0, 1], [np.nan, 0, 0, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 9]], np.float32)
    ep = runner.run(ConstantSource(bad), "task").episode
    flags = ep.extras["safety_flags"]
    assert flags[1] & SafetyFlag.NONFINITE and flags[2] & SafetyFlag.TRANSLATION and flags[3] & SafetyFlag.GRIPPER
    np.testing.assert_array_equal(ep.interventions, flags != 0)
    assert ep.info["safety"]["nonfinite"] == 2 and ep.info["safety"]["interventions"] == int((flags != 0).sum())
    np.testing.assert_array_equal(ep.actions[1, :6], 0)  # the recorded action is the hold actually sent
    assert np.isnan(ep.extras["action_commanded"][1, 0])  # and the bad command is kept for inspection
    back = Episode.from_bytes(ep.to_bytes())
    np.testing.assert_array_equal(back.extras["action_commanded"], ep.extras["action_commanded"])  # NaN kept
    np.testing.assert_array_equal(back.extras["safety_flags"], flags)


def test_success_callback_labels_the_rollout_and_stops_after_settling():
    runner, arm = make_runner(RunnerConfig(hz=10, max_steps=50, settle_steps=2))
    ep = runner.run(ConstantSource([[0, 0, 0.2, 0, 0, 0, 1]]), "lift", success=lambda: arm.xyz[2] > 0.33).episode
    assert ep.outcome == "success" and ep.info["end_reason"] == "success"
    first = int(np.argmax(ep.rewards))
    assert ep.rewards[first:].all() and not ep.rewards[:first].any()
    assert len(ep) == first + 2 + 1 + 1  # settle steps, the step that saw success, the closing observation
    res = make_runner(RunnerConfig(hz=10, max_steps=5))[0].run(ConstantSource([[0, 0, 0, 0, 0, 0, 1]]), "lift", success=lambda: False)
    assert res.episode.outcome == "failure" and res.end_reason == "max_steps"


def test_camera_unplugged_mid_episode_ends_it_with_a_reason_and_keeps_the_frames(tmp_path):
    cam = SyntheticCamera(SyntheticCameraConfig(fps=100, width=16, height=16))
    runner, arm = make_runner(RunnerConfig(hz=50, max_steps=100), cams={"front": cam})
    from robot.control import MonotonicClock

    runner.clock = MonotonicClock()

    class UnplugAt(ConstantSource):
        def next_chunk(self, obs):
            if obs.step == 7:
                cam.unplug()
            return super().next_chunk(obs)

    res = runner.run(UnplugAt([[0.1, 0, 0, 0, 0, 0, 1]]), "task")
    cam.disconnect()
    assert res.end_reason == "camera_lost" and "unplugged" in res.detail
    ep = res.episode
    assert 8 <= len(ep) <= 10 and "camera_lost" in ep.info["end_reason"]
    assert not np.any(arm.sent[-1][:6])  # the arm was sent a hold
    sink = FolderSink(tmp_path)
    sink(ep)  # the partial episode is a valid episode that the outbox keeps
    assert read_episode_file(sink.written[0]).equals(ep)


def test_stalled_camera_ends_the_episode():
    cam = SyntheticCamera(SyntheticCameraConfig(fps=100, width=16, height=16))
    runner, _ = make_runner(RunnerConfig(hz=20, max_steps=100), cams={"front": cam})
    from robot.control import MonotonicClock

    runner.clock = MonotonicClock()
    runner.cameras.timeout_s = 0.1

    class StallAt(ConstantSource):
        def next_chunk(self, obs):
            if obs.step == 3:
                cam.stall()
            return super().next_chunk(obs)

    res = runner.run(StallAt([[0, 0, 0, 0, 0, 0, 1]]), "task")
    cam.disconnect()
    assert res.end_reason == "camera_stalled" and 3 <= len(res.episode) <= 6


def test_watchdog_in_the_loop_holds_when_a_source_goes_quiet():
    runner, arm = make_runner(RunnerConfig(hz=10, max_steps=10))

    class Quiet(ConstantSource):
        """A remote source whose newest command stops advancing after step 3."""

        def status(self):
            return SourceStatus(stamp=min(runner.clock.now(), 0.25))

        def next_chunk(self, obs):
            return np.array([[0.1, 0, 0, 0, 0, 0, 1]], np.float32)

    ep = runner.run(Quiet(None), "task").episode
    flags = ep.extras["safety_flags"][:10]
    # From t = 0.6 s the newest command (0.25 s) is older than the 0.3 s timeout: the arm holds.
    assert not flags[:6].any() and all(f & SafetyFlag.WATCHDOG for f in flags[6:])
    np.testing.assert_array_equal(ep.actions[6:10, :6], 0)


def test_source_errors_end_the_episode_cleanly():
    runner, _ = make_runner()

    class Broken(ConstantSource):
        def next_chunk(self, obs):
            if obs.step == 2:
                raise RuntimeError("inference failed")
            return super().next_chunk(obs)

    res = runner.run(Broken([[0, 0, 0, 0, 0, 0, 1]]), "task")
    assert res.end_reason == "source_error" and "inference failed" in res.detail and len(res.episode) == 2


def _onnx_policy(path, K=4):
    """A real ONNX graph: image (H, W, 3) uint8 -> mean brightness drives +x; (K, 7) float32 chunk."""
    img = helper.make_tensor_value_info("image", TensorProto.UINT8, [16, 16, 3])
    out = helper.make_tensor_value_info("actions", TensorProto.FLOAT, [K, 7])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 7], [1.0, 0, 0, 0, 0, 0, 0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [K, 7], [0, 0, 0, 0, 0, 0, 1.0] * K)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 2550.0])
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "scale"], ["s"]),
        helper.make_node("Mul", ["s", "w"], ["row"]),
        helper.make_node("Add", ["row", "b"], ["actions"]),
    ]
    graph = helper.make_graph(nodes, "tiny_policy", [img], [out], initializer=[w, b, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_policy_source_with_a_real_onnx_model(tmp_path):
    _onnx_policy(str(tmp_path / "policy.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])

    class OrtPolicy:
        def act(self, image_hwc_uint8, state=None):
            return sess.run(None, {"image": image_hwc_uint8})[0]

    ep32 = random_episode(T=4, H=32, W=32)  # the camera gives 32x32; the policy wants 16x16
    runner, arm = make_runner(RunnerConfig(hz=10, max_steps=8), cams={"front": EpisodeReplayCamera(ep32, loop=True)})
    src = PolicySource(OrtPolicy(), camera="front", image_size=(16, 16))
    ep = runner.run(src, "move").episode
    assert src.calls == 2  # K = 4, 8 steps
    assert np.all(ep.actions[:8, 0] > 0) and np.all(ep.actions[:8, 6] == 1)
    with pytest.raises(KeyError, match="wrist"):
        PolicySource(OrtPolicy(), camera="wrist").next_chunk(type("O", (), {"frames": {"front": None}})())


def test_runner_config_errors_name_the_field():
    with pytest.raises(ValueError, match="runner.hz"):
        RunnerConfig(hz=0)
    with pytest.raises(ValueError, match="source_kind"):
        RunnerConfig(source_kind="human")


def test_persistent_startup_refusal_ends_the_episode_with_a_clear_reason():
    arm = KinematicArm()
    safety = SafetyFilter(SafetyConfig(startup_max_translation_m=0.01), arm.limits)
    runner, _ = make_runner(RunnerConfig(hz=10, max_steps=50, startup_timeout_steps=5), safety=safety)
    res = runner.run(ConstantSource([[1, 0, 0, 0, 0, 0, 1]]), "task")
    assert res.end_reason == "startup_refused" and "start-up guard" in res.detail
    assert len(res.episode) == 5 and res.episode.info["safety"]["startup"] == 5
    assert not res.episode.actions[:, :6].any()
