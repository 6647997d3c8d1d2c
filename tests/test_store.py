import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
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
