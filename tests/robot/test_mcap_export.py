"""MCAP export: written with our ROS 2 writer (rosbags CDR), read back with mcap-ros2-support AND rosbags."""

import json
from pathlib import Path

import numpy as np
import pytest

from learning.data.mcap_export import export_episode_mcap, export_episodes_mcap
from robot import rosmsg
from tests.factories import random_episode


def test_episode_roundtrips_through_mcap_with_a_second_library(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    ep = random_episode(T=5, H=8, W=10, depth=True)
    s = export_episode_mcap(ep, tmp_path / "ep.mcap")
    assert s.messages == 1 + 5 * 7 and s.path.exists() and not list(tmp_path.glob(".*tmp"))
    by_topic: dict[str, list] = {}
    with open(s.path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            by_topic.setdefault(channel.topic, []).append((schema.name, message.log_time, decoded))
    assert by_topic["/front/image_raw"][0][0] == "sensor_msgs/msg/Image"
    imgs = np.stack([rosmsg.image_from_msg(m) for _, _, m in by_topic["/front/image_raw"]])
    np.testing.assert_array_equal(imgs, ep.images["front"])
    depth = np.stack([rosmsg.image_from_msg(m) for _, _, m in by_topic["/front/depth/image_raw"]])
    np.testing.assert_array_equal(depth, ep.depth["front"])
    np.testing.assert_allclose([rosmsg.joint_state_from_msg(m)[1] for _, _, m in by_topic["/joint_states"]], ep.joints, rtol=1e-6)
    np.testing.assert_allclose([rosmsg.pose_from_msg(m) for _, _, m in by_topic["/ee_pose"]], ep.ee_pose, rtol=1e-6)
    np.testing.assert_allclose([rosmsg.float64_array_from_msg(m) for _, _, m in by_topic["/action"]], ep.actions, rtol=1e-6)
    assert [m.data for _, _, m in by_topic["/reward"]] == list(ep.rewards)
    assert [m.data for _, _, m in by_topic["/intervention"]] == list(ep.interventions)
    assert [t for _, t, _ in by_topic["/joint_states"]] == [int(round(x * 1e9)) for x in ep.timestamps]
    assert json.loads(by_topic["/episode"][0][2].data)["uuid"] == ep.uuid


def test_session_file_reads_back_with_rosbags(tmp_path):
    from rosbags.highlevel import AnyReader

    eps = [random_episode(T=4, H=8, W=8, seed=i, outcome=o) for i, o in enumerate(["success", "near_success", "failure"])]
    s = export_episodes_mcap(eps, tmp_path / "session.mcap")
    assert s.episodes == 3
    with AnyReader([Path(s.path)], default_typestore=rosmsg.default_types().typestore) as r:
        metas = [json.loads(r.deserialize(raw, c.msgtype).data) for c, _, raw in r.messages() if c.topic == "/episode"]
        stamps = [t for c, t, _ in r.messages() if c.topic == "/joint_states"]
    assert [m["outcome"] for m in metas] == ["success", "near_success", "failure"]
    assert len(stamps) == 12 and all(np.diff(stamps) > 0)  # episodes back to back, never overlapping


def test_export_cli_from_a_store(tmp_path):
    from learning.cli import main
    from learning.data.store import EpisodeStore

    store = EpisodeStore(tmp_path / "store")
    for i in range(2):
        store.append(random_episode(T=4, H=16, W=16, seed=i))
    assert main(["export-mcap", f"store={tmp_path / 'store'}", "episodes=[1]", f"out={tmp_path / 'mcap'}"]) == 0
    files = list((tmp_path / "mcap").glob("episode_000001_*.mcap"))
    assert len(files) == 1
    assert main(["export-mcap", f"store={tmp_path / 'store'}", "episodes=[7]", f"out={tmp_path / 'mcap'}"]) == 2
    assert main(["export-mcap", f"store={tmp_path / 'store'}", "episodes=all", f"out={tmp_path / 'mcap'}"]) == 2
    assert main(["export-mcap", f"store={tmp_path / 'store'}", "bogus=1"]) == 2


# ---------------------------------------------------------------------------------------------- issue 18 #5
def _read(path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict[str, list] = {}
    with open(path, "rb") as f:
        for _, channel, message, decoded in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            out.setdefault(channel.topic, []).append((channel, message.log_time, decoded))
    return out


def _recorded_episode(rig="sim-maniskill"):
    """An episode as the robot records it: EpisodeRecorder on a loop clock that starts at 0 (simulated time)."""
    from robot.episode import EpisodeRecorder

    rec = EpisodeRecorder("pick", 10.0, rig=rig, source="scripted")
    for t in range(4):
        rec.add_step(timestamp=0.1 * t, images={"front": np.zeros((8, 8, 3), np.uint8)}, joints=np.zeros(9), ee_pose=np.zeros(7),
                     gripper=1.0, action=np.zeros(7))
    return rec.finish("failure", info={"seed": 3})


def test_log_times_are_the_wall_clock_time_the_episode_was_recorded(tmp_path):
    import time

    before = time.time()
    ep = _recorded_episode()
    start = ep.info["start_unix_s"]
    assert before - 1 <= start <= time.time() + 1 and ep.info["seed"] == 3
    topics = _read(export_episode_mcap(ep, tmp_path / "ep.mcap").path)
    want = [int(round((start + x) * 1e9)) for x in ep.timestamps]
    assert [t for _, t, _ in topics["/joint_states"]] == want  # not 1970
    assert [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, _, m in topics["/ee_pose"]] == pytest.approx(start + ep.timestamps, abs=1e-6)
    assert topics["/ee_pose"][0][2].header.frame_id == "world"  # ManiSkill reports the TCP in its world frame
    wall = random_episode(T=3, H=8, W=8)
    wall.timestamps = wall.timestamps + 1.7e9  # recorded on a wall clock already: kept as it is
    topics = _read(export_episode_mcap(wall, tmp_path / "wall.mcap").path)
    assert [t for _, t, _ in topics["/joint_states"]] == [int(round(x * 1e9)) for x in wall.timestamps]


def test_every_channel_offers_rosbag2_qos_profiles(tmp_path):
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2.metadata import parse_qos

    s = export_episode_mcap(random_episode(T=3, H=8, W=8), tmp_path / "ep.mcap")
    topics = _read(s.path)
    for topic, msgs in topics.items():
        (qos,) = parse_qos(msgs[0][0].metadata["offered_qos_profiles"])
        assert (qos.history.name, qos.depth, qos.reliability.name, qos.durability.name) == ("KEEP_LAST", 10, "RELIABLE", "VOLATILE"), topic
    with AnyReader([Path(s.path)], default_typestore=rosmsg.default_types().typestore) as r:
        assert all(c.ext.offered_qos_profiles and c.ext.offered_qos_profiles[0].reliability.name == "RELIABLE" for c in r.connections)


def test_joint_names_are_the_robots(tmp_path):
    names = lambda ep: rosmsg.joint_state_from_msg(_read(export_episode_mcap(ep, tmp_path / f"{ep.uuid}.mcap").path)["/joint_states"][0][2])[0]  # noqa: E731
    assert list(names(_recorded_episode("sim-maniskill"))) == [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
    assert list(names(_recorded_episode("sim-libero")))[0] == "panda_joint1"
    own = random_episode(T=2, H=8, W=8, rig="real")
    own.info["joint_names"] = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]
    assert list(names(own))[0] == "fr3_joint1"  # the episode's own names first
    assert list(names(random_episode(T=2, H=8, W=8, rig="real")))[0] == "joint_0"  # unknown rig: generic
