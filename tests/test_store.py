import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from learning.data.store import EpisodeStore, StoreError, VideoSettings
from learning.data.windows import WindowDataset, WindowError, WindowSpec
from tests.factories import random_episode


def test_round_trip_is_exact_for_per_step_data(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    eps = [random_episode(seed=i, outcome=o, cams=("front", "wrist"), depth=(i == 1), loop_iteration=i, policy_version=f"v{i}")
           for i, o in enumerate(["success", "near_success", "failure"])]
    for e in eps:
        store.append(e)
    reopened = EpisodeStore(tmp_path / "s", create=False)
    assert len(reopened) == 3
    for i, e in enumerate(eps):
        back = reopened.read(i)
        assert back.equals(e, images=False)
        assert np.array_equal(back.depth.get("front", np.zeros(0)), e.depth.get("front", np.zeros(0)))
        for cam in e.images:  # lossy H.264 at high quality: close, not exact
            assert np.abs(back.images[cam].astype(int) - e.images[cam]).mean() < 4


def test_lossless_codec_round_trips_images_exactly(tmp_path):
    store = EpisodeStore(tmp_path / "s", VideoSettings(codec="libx264rgb", crf=0))
    e = random_episode()
    store.append(e)
    assert store.read(0).equals(e)


def test_layout_is_lerobot_v3_with_sans_fields(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    store.append(random_episode(outcome="success"))
    store.append(random_episode(seed=1, outcome="near_success"))
    info = json.loads((tmp_path / "s/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 24
    assert info["features"]["observation.images.front"]["dtype"] == "video"
    meta = pq.read_table(tmp_path / "s/meta/episodes/chunk-000/file-001.parquet")
    assert meta.column("outcome").to_pylist() == ["near_success"]
    for col in ("uuid", "source", "policy_version", "loop_iteration", "dataset_from_index", "videos/observation.images.front/to_timestamp"):
        assert col in meta.column_names
    data = pq.read_table(tmp_path / "s/data/chunk-000/file-001.parquet")
    assert data.column("index").to_pylist()[0] == 12 and "next.reward" in data.column_names
    assert (tmp_path / "s/videos/observation.images.front/chunk-000/file-001.mp4").exists()
    stats = json.loads((tmp_path / "s/meta/stats.json").read_text())
    assert stats["action"]["count"] == [24]
    both = np.concatenate([store.read(0).actions, store.read(1).actions])
    np.testing.assert_allclose(stats["action"]["mean"], both.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], both.std(0), atol=1e-6)


def test_append_is_idempotent_by_uuid(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    e = random_episode()
    assert store.append(e) == 0
    assert store.append(e) == 0
    assert len(EpisodeStore(tmp_path / "s")) == 1


WRITER = textwrap.dedent(
    """
    import sys
    from learning.data.store import EpisodeStore
    from tests.factories import random_episode
    store = EpisodeStore(sys.argv[1])
    i = 0
    while True:
        store.append(random_episode(T=40, H=96, W=96, cams=("front", "wrist"), depth=True, seed=1000 + i))
        print(len(store), flush=True)
        i += 1
    """
)


def test_a_killed_writer_leaves_the_store_readable(tmp_path):
    root = tmp_path / "s"
    rng = np.random.default_rng(0)
    for attempt in range(4):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, cwd=os.getcwd(),
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
        p.stdout.readline()  # at least one episode committed in this round
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        store = EpisodeStore(root)
        n = len(store)
        assert n >= attempt + 1
        for i in range(n):
            store.read(i)  # every committed episode is complete
        # the next append still works and gets the next index
        assert store.append(random_episode(seed=attempt)) == n


def test_corrupt_files_give_one_line_errors(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    store.append(random_episode())
    (tmp_path / "s/data/chunk-000/file-000.parquet").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="file-000.parquet.*corrupt"):
        store.read(0)
    (tmp_path / "s/meta/episodes/chunk-000/file-000.parquet").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="episode index file .* is corrupt"):
        EpisodeStore(tmp_path / "s")
    with pytest.raises(StoreError, match="not an episode store"):
        EpisodeStore(tmp_path / "nothing", create=False)


def test_windows_shapes_padding_and_errors(tmp_path):
    store = EpisodeStore(tmp_path / "s", VideoSettings(codec="libx264rgb", crf=0))
    store.append(random_episode(T=10, seed=0))
    store.append(random_episode(T=6, seed=1, outcome="near_success"))
    ds = WindowDataset(store, WindowSpec(chunk=4, n_cond=2))
    assert len(ds) == 9 + 5
    w = ds[0]
    assert w["cond"].shape == (2, 32, 32, 3) and w["actions"].shape == (4, 7) and w["frames"].shape == (4, 32, 32, 3)
    ep = store.read(0)
    assert np.array_equal(w["frames"], ep.images["front"][1:5]) and np.array_equal(w["actions"], ep.actions[0:4])
    assert np.array_equal(w["cond"][0], w["cond"][1])  # before the start: frame 0 repeated
    last = ds[8]  # starts at t=8 of a 10-step episode: one real frame, then padding
    assert last["mask"].tolist() == [True, False, False, False]
    assert np.all(last["actions"][1:, :6] == 0) and np.array_equal(last["frames"][3], ep.images["front"][9])
    b = ds.batch([0, 9, 13])
    assert b["frames"].shape == (3, 4, 32, 32, 3) and b["outcome"].tolist() == [0, 1, 1]
    with pytest.raises(WindowError, match="episode 1: 6 frames is shorter than one window"):
        WindowDataset(store, WindowSpec(chunk=8, pad_end=False))
    store.append(random_episode(T=6, H=16, W=16, seed=2))
    with pytest.raises(WindowError, match="episode 2: image size"):
        WindowDataset(store, WindowSpec(chunk=2))


def test_windows_carry_the_robot_state_targets_of_the_state_head(tmp_path):
    """With state features, a window holds the state at its conditioning frame and at each next frame (held at the
    last one past the episode's end), in the features' order, as the store recorded them."""
    store = EpisodeStore(tmp_path / "s")
    store.append(random_episode(T=10, seed=0))
    ep = store.read(0)
    ds = WindowDataset(store, WindowSpec(chunk=4, state_features=("gripper", "ee_z", "ee_x")))
    want = np.stack([ep.gripper, ep.ee_pose[:, 2], ep.ee_pose[:, 0]], 1)
    np.testing.assert_array_equal(store.states(0, ("gripper", "ee_z", "ee_x")), want)
    w = ds[3]
    assert w["state_cond"].shape == (3,) and w["states"].shape == (4, 3)
    np.testing.assert_array_equal(w["state_cond"], want[3])
    np.testing.assert_array_equal(w["states"], want[4:8])
    np.testing.assert_array_equal(ds[8]["states"], want[[9, 9, 9, 9]])  # past the end: the last state, held
    assert "states" not in WindowDataset(store, WindowSpec(chunk=4))[0]
    with pytest.raises(ValueError, match="unknown state feature"):
        WindowSpec(state_features=("elbow",))


def test_end_hold_windows_teach_holding_still_at_the_last_frame(tmp_path):
    """Each extra window starts at the episode's last frame: its conditioning frame is that frame, every action of its
    chunk holds the arm still with the last gripper command, and its frames and state stay the last ones."""
    store = EpisodeStore(tmp_path / "s", VideoSettings(codec="libx264rgb", crf=0))
    store.append(random_episode(T=10, seed=0))
    ep = store.read(0)
    plain = WindowDataset(store, WindowSpec(chunk=4))
    ds = WindowDataset(store, WindowSpec(chunk=4, end_hold_windows=2, state_features=("ee_x",)))
    assert len(ds) == len(plain) + 2
    for w in (ds[len(ds) - 2], ds[len(ds) - 1]):
        assert w["t"] == 9 and np.array_equal(w["cond"][0], ep.images["front"][9]) and not w["mask"].any()
        assert np.all(w["actions"][:, :6] == 0) and np.all(w["actions"][:, 6] == ep.actions[9, 6])
        assert np.all(w["frames"] == ep.images["front"][9]) and np.all(w["states"] == ep.ee_pose[9, 0])
    with pytest.raises(ValueError, match="end_hold_windows needs pad_end"):
        WindowSpec(end_hold_windows=1, pad_end=False)


def test_meta_episodes_reads_as_one_table_with_and_without_policy_versions(tmp_path):
    """SANS episodes carry no policy_version / loop_iteration, robot rollouts do: every file has the same types,
    so pyarrow (and LeRobot) read meta/episodes as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from learning.data.store import EpisodeStore
    from tests.factories import random_episode

    store = EpisodeStore(tmp_path / "s")
    sans = random_episode(T=4, seed=0, outcome="success")
    rollout = random_episode(T=4, seed=1, outcome="failure")
    rollout.policy_version, rollout.loop_iteration, rollout.source = "loop-1", 1, "policy"
    store.append(sans)
    store.append(rollout)
    t = pq.read_table(tmp_path / "s" / "meta" / "episodes")
    assert t.num_rows == 2 and t.schema.field("policy_version").type == pa.string()
    assert t.schema.field("loop_iteration").type == pa.int64()
    assert t.column("policy_version").to_pylist() == [None, "loop-1"] and t.column("loop_iteration").to_pylist() == [None, 1]


# ---------------------------------------------------------------------------------------------------- issue 18
# LeRobot cannot be imported here (it needs torchvision); these tests check the on-disk rules it applies when it opens
# a v3 folder: tasks.parquet read with pandas (the task string is the index: `tasks.iloc[i].name`), and stats.json
# cast to numpy with `count` shaped (1,) and every non-count image statistic shaped (3, 1, 1)
# (lerobot/datasets/compute_stats.py `_assert_type_and_shape`).
def test_tasks_parquet_keeps_the_task_as_the_pandas_index(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    store.append(random_episode(seed=0))
    e = random_episode(seed=1)
    e.task = "push the cube"
    store.append(e)
    t = pq.read_table(tmp_path / "s/meta/tasks.parquet")
    pandas_meta = json.loads(t.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]  # pd.read_parquet -> index named "task", one column task_index
    assert [c["name"] for c in pandas_meta["columns"]] == ["task_index", "task"]
    assert t.column_names == ["task_index", "task"] and t.schema.field("task_index").type == "int64"
    assert t.column("task").to_pylist() == ["pick up the red cube", "push the cube"]
    assert store.tasks() == ["pick up the red cube", "push the cube"]


def test_our_reader_takes_old_and_pandas_written_tasks_files(tmp_path):
    from learning.data.store import read_tasks

    old = tmp_path / "old.parquet"  # what stores before issue 18 wrote: plain columns, no pandas index
    pq.write_table(pa.table({"task_index": [0, 1], "task": ["a", "b"]}), old)
    assert read_tasks(old) == ["a", "b"]
    unnamed = tmp_path / "unnamed.parquet"  # pandas with an unnamed index, rows out of order
    pq.write_table(pa.table({"task_index": [1, 0], "__index_level_0__": ["b", "a"]}), unnamed)
    assert read_tasks(unnamed) == ["a", "b"]


def test_stats_json_has_lerobot_image_stats(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    eps = [random_episode(T=12, seed=0, cams=("front", "wrist")), random_episode(T=20, seed=1, cams=("front", "wrist"))]
    for e in eps:
        store.append(e)
    stats = json.loads((tmp_path / "s/meta/stats.json").read_text())
    info = json.loads((tmp_path / "s/meta/info.json").read_text())
    for feat, spec in info["features"].items():
        if feat in ("timestamp", "wvl.stamp", "frame_index", "episode_index", "index", "task_index", "intervention"):
            continue
        assert set(stats[feat]) >= {"mean", "std", "min", "max", "count"}, feat
        for k, v in stats[feat].items():
            v = np.asarray(v)
            assert v.ndim >= 1 and (v.shape == (1,) if k == "count" else True), (feat, k, v.shape)
            if "image" in feat and k != "count":
                assert v.shape == (3, 1, 1), (feat, k, v.shape)
            elif k != "count":
                assert v.shape == tuple(spec["shape"]), (feat, k, v.shape)
    for cam in ("front", "wrist"):
        s = {k: np.asarray(v) for k, v in stats[f"observation.images.{cam}"].items()}
        px = np.concatenate([e.images[cam].reshape(-1, 3) for e in eps]) / 255.0  # every frame sampled (< 100 each)
        assert s["count"].tolist() == [32]
        np.testing.assert_allclose(s["mean"][:, 0, 0], px.mean(0), atol=1e-9)
        np.testing.assert_allclose(s["std"][:, 0, 0], px.std(0), atol=1e-9)
        np.testing.assert_allclose(s["min"][:, 0, 0], px.min(0))
        np.testing.assert_allclose(s["max"][:, 0, 0], px.max(0))
        assert 0.0 <= s["min"].min() and s["max"].max() <= 1.0


def test_image_stats_subsample_long_episodes_and_large_frames():
    from learning.data.store import _image_sample_indices, _image_stats

    assert len(_image_sample_indices(50)) == 50 and len(_image_sample_indices(1000)) == 177
    assert len(_image_sample_indices(10**6)) == 10_000
    frames = np.random.default_rng(0).integers(0, 256, (400, 300, 320, 3), dtype=np.uint8)
    s = _image_stats(frames)
    assert s["count"] == [len(_image_sample_indices(400))]
    np.testing.assert_allclose(np.asarray(s["mean"])[:, 0, 0], 0.5, atol=0.01)


def test_next_reward_is_lerobots_and_success_per_observation_is_kept(tmp_path):
    store = EpisodeStore(tmp_path / "s", VideoSettings(lossless=True))
    e = random_episode(T=10, seed=0)  # success flags: 0 ... 0 1 1
    e.rewards[:] = [0, 0, 0, 1, 0, 0, 0, 0, 1, 1]
    store.append(e)
    t = store.step_table(0)
    assert t.column("observation.success").to_pylist() == e.rewards.tolist()
    assert t.column("next.reward").to_pylist() == [0, 0, 1, 0, 0, 0, 0, 1, 1, 1]  # reward after action t = flag at t+1
    assert store.success(0).tolist() == e.rewards.tolist() and store.read(0).rewards.tolist() == e.rewards.tolist()
    ds = WindowDataset(store, WindowSpec(chunk=4, n_cond=1))
    assert ds[0]["rewards"].tolist() == e.rewards[1:5].tolist()  # the reward head's target: success of each next frame


def test_stores_written_before_observation_success_still_read_success(tmp_path):
    store = EpisodeStore(tmp_path / "s", VideoSettings(lossless=True))
    e = random_episode(T=10, seed=0)
    store.append(e)
    path = tmp_path / "s/data/chunk-000/file-000.parquet"  # rewrite it as the old layout: per-observation next.reward
    t = pq.read_table(path).drop(["observation.success"])
    t = t.set_column(t.column_names.index("next.reward"), "next.reward", pa.array(e.rewards))
    pq.write_table(t, path)
    assert store.success(0).tolist() == e.rewards.tolist()
    assert store.read(0).equals(e)
    assert WindowDataset(store, WindowSpec(chunk=4, n_cond=1))[0]["rewards"].tolist() == e.rewards[1:5].tolist()


def test_lossless_store_gives_back_the_canonical_bytes(tmp_path):
    from robot.episode import Episode

    assert VideoSettings(lossless=True).encoder_codec == "libx264rgb" and VideoSettings(lossless=True).encoder_crf == 0
    assert not VideoSettings().is_lossless
    e = random_episode(T=12, seed=3, cams=("wrist", "front"), depth=True)
    e.info = {"seed": 3, "perturbation": {"kind": "place_offset", "dx": 0.04}, "attempt": 2}  # keys not sorted
    e.extras = {"safety_clipped": np.zeros(12, bool), "loop_dt": np.full(12, 0.1), "joint_torque": np.ones((12, 7), np.float32)}
    canonical = e.to_bytes()
    store = EpisodeStore(tmp_path / "s", VideoSettings(codec="libx264", crf=30, lossless=True))
    received = e.to_bytes("zlib")  # the robot may ship it compressed; the canonical form is the raw one
    import hashlib

    store.append(Episode.from_bytes(received), received_sha256=hashlib.sha256(received).hexdigest(), robot_id="robot-1")
    assert store.read(0).to_bytes() == canonical
    row = EpisodeStore(tmp_path / "s", create=False).row(0)
    assert row["received_sha256"] == hashlib.sha256(received).hexdigest() and row["robot_id"] == "robot-1"


def test_a_uuid_stored_from_other_bytes_is_a_conflict(tmp_path):
    from learning.data.store import EpisodeConflictError

    store = EpisodeStore(tmp_path / "s")
    e = random_episode(seed=4)
    assert store.append(e, received_sha256="a" * 64, robot_id="robot-2") == 0
    assert store.append(e, received_sha256="a" * 64, robot_id="robot-1") == 0  # same bytes again: idempotent
    with pytest.raises(EpisodeConflictError, match=f"episode {e.uuid} is stored already .*'robot-2'"):
        store.append(e, received_sha256="b" * 64, robot_id="robot-1")
    assert store.append(e) == 0  # a local append (no received bytes) stays idempotent
    assert len(EpisodeStore(tmp_path / "s")) == 1
    assert pq.read_table(tmp_path / "s/meta/episodes/chunk-000/file-000.parquet").schema.field("robot_id").type == "string"
