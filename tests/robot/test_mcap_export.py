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
