import numpy as np

from learning.cli import main as wvl
from learning.data.store import EpisodeStore
from learning.data.video import decode_video
from learning.data.view import grid, label_frames
from tests.factories import random_episode


def test_label_frames_marks_outcome_and_success_frames():
    ep = random_episode(T=6, outcome="success")
    frames = label_frames(ep, scale=4)
    assert frames.shape == (6, 128, 128, 3)
    # success frames (reward 1, the last two) carry a green bar along the bottom; the others do not
    assert np.all(frames[-1, -4, :, 1] == 200) and not np.all(frames[0, -4, :, 1] == 200)  # inside the 2 px border


def test_grid_holds_short_episodes_on_their_last_frame():
    a, b = np.zeros((5, 8, 8, 3), np.uint8), np.full((3, 8, 8, 3), 7, np.uint8)
    g = grid([a, b], columns=2)
    assert g.shape == (5, 8, 16, 3) and np.all(g[4, :, 8:] == 7)


def test_wvl_view_writes_mp4_gif_and_rrd(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    for i, o in enumerate(["success", "near_success", "success"]):
        store.append(random_episode(T=5 + i, seed=i, outcome=o))
    assert wvl(["view", f"store={tmp_path / 's'}", "episodes=[0,1,2]", f"out={tmp_path / 'v.mp4'}", "scale=2", "columns=2"]) == 0
    video = decode_video(tmp_path / "v.mp4")
    assert video.shape == (7, 128, 128, 3)  # 2x2 grid of 64 px tiles, as long as the longest episode
    assert (tmp_path / "v.rrd").stat().st_size > 1000
    assert wvl(["view", f"store={tmp_path / 's'}", "outcome=near_success", f"out={tmp_path / 'n.gif'}", "rrd=false"]) == 0
    assert (tmp_path / "n.gif").read_bytes()[:6] == b"GIF89a"
    assert wvl(["view", f"store={tmp_path / 's'}", "outcome=failure", f"out={tmp_path / 'f.mp4'}"]) == 2  # nothing selected
    assert wvl(["view", f"store={tmp_path / 'missing'}", f"out={tmp_path / 'f.mp4'}"]) == 2


def test_wvl_view_png_still_and_bad_episode_selection(tmp_path, capsys):
    from PIL import Image

    store = EpisodeStore(tmp_path / "s")
    for i in range(2):
        store.append(random_episode(T=4, seed=i, outcome="success"))
    assert wvl(["view", f"store={tmp_path / 's'}", "episodes=[0,1]", f"out={tmp_path / 'v.png'}", "scale=2", "rrd=false"]) == 0
    still = np.asarray(Image.open(tmp_path / "v.png"))
    assert still.shape == (64, 128, 3)  # two 64 px tiles side by side: the scenes at reset
    np.testing.assert_array_equal(still, grid([label_frames(store.read(i), scale=2) for i in (0, 1)], 4)[0])
    capsys.readouterr()
    assert wvl(["view", f"store={tmp_path / 's'}", "episodes=all", f"out={tmp_path / 'a.png'}", "rrd=false"]) == 2
    assert "episodes: 'all' is not a list of episode indices" in capsys.readouterr().err
