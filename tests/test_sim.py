"""The simulated robot (ManiSkill): scripted SANS, labels from the simulator, config-only task switch."""

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("mani_skill")

from robot.sim.collect import CollectStats, collect_sans, run_scripted_episode  # noqa: E402
from robot.sim.maniskill import ManiSkillConfig, SimRobot, UnknownTaskError  # noqa: E402

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def pick():
    robot = SimRobot(ManiSkillConfig(task="PickCube-v1", image_size=64))
    robot.connect()
    yield robot
    robot.close()


def test_expert_succeeds_and_near_success_fails_by_the_simulators_flag(pick):
    ep = run_scripted_episode(pick, seed=3, perturbation_kind="none")
    assert ep.outcome == "success" and ep.info["sim_success"] is True
    assert ep.rewards[-1] == 1.0 and ep.rewards[0] == 0.0  # per-frame success label
    assert ep.images["front"].shape[1:] == (64, 64, 3) and ep.fps == 10.0
    assert np.allclose(np.diff(ep.timestamps), 0.1)
    near = run_scripted_episode(pick, seed=3, perturbation_kind="place_offset")
    assert near.outcome == "near_success" and near.info["sim_success"] is False and near.rewards.max() == 0.0
    assert 0.035 <= np.linalg.norm(near.info["perturbation_offset_m"]) <= 0.06
    # the cube was carried: it ends up in the air near the goal, not on the table
    assert near.info["perturbation"] == "place_offset"


def test_an_episode_depends_only_on_its_seed_not_on_the_episodes_before(pick):
    # PhysX keeps state across plain resets: after different earlier episodes, the same seed and actions diverged
    # (robot/sim/maniskill.py ManiSkillConfig.rebuild_scene). Every reset now builds the scene anew ...
    pick.sim.reset(3)
    scene = pick.sim.env.unwrapped.scene.px
    pick.sim.reset(3)
    assert pick.sim.env.unwrapped.scene.px is not scene
    # ... and a rebuilt scene is the scene a fresh simulator starts from: an episode after another one equals the
    # same episode as a fresh simulator's first
    run_scripted_episode(pick, seed=5, perturbation_kind="grasp_offset")
    after = run_scripted_episode(pick, seed=3, perturbation_kind="none")
    fresh_robot = SimRobot(ManiSkillConfig(task="PickCube-v1", image_size=64, rebuild_scene=False))
    fresh_robot.connect()
    try:
        fresh = run_scripted_episode(fresh_robot, seed=3, perturbation_kind="none")
    finally:
        fresh_robot.close()
    assert np.array_equal(after.actions, fresh.actions)
    assert np.array_equal(after.images["front"], fresh.images["front"])


def test_collect_sans_interleaves_and_labels(pick):
    stats = CollectStats()
    eps = list(collect_sans(pick, 2, 2, seed=10, stats=stats))
    assert [e.outcome for e in eps] == ["success", "near_success", "success", "near_success"]
    assert stats.kept["success"] == 2 and stats.kept["near_success"] == 2
    assert all(e.source == "scripted" and e.task == pick.instruction for e in eps)


def test_collect_sans_can_meet_at_the_goal_tolerance(pick):
    """Successes placed off the goal (inside PickCube's 2.5 cm) and near-successes missing it by a little more."""
    stats = CollectStats()
    eps = list(collect_sans(pick, 2, 2, seed=10, stats=stats, near_success_mix={"place_offset": 1.0},
                            success_place_offset=(0.01, 0.015), near_success_offsets={"place_offset": [0.03, 0.032]}))
    assert [e.outcome for e in eps] == ["success", "near_success", "success", "near_success"]
    miss = [float(np.linalg.norm(e.info["perturbation_offset_m"])) for e in eps]
    assert all(0.0099 <= m <= 0.0151 for m in miss[0::2]) and all(0.0299 <= m <= 0.0321 for m in miss[1::2])  # (4 decimals)
    assert all(e.info["perturbation"] == "place_offset" for e in eps)


def test_offset_ranges_are_refused_by_name_when_wrong():
    from robot.sim.expert import check_offsets, sample_perturbation

    with pytest.raises(ValueError, match=r"near_success_offsets: 'drop' is not a perturbation kind"):
        check_offsets({"drop": [0.0, 0.1]})
    with pytest.raises(ValueError, match=r"success_place_offset.place_offset: need 0 <= min <= max \(m\), got \[0.02, 0.01\]"):
        check_offsets({"place_offset": (0.02, 0.01)}, "success_place_offset")
    with pytest.raises(ValueError, match=r"near_success_offsets.grasp_offset: give \[min, max\] in m, got \[0.03\]"):
        check_offsets({"grasp_offset": [0.03]})
    rng = np.random.default_rng(0)  # the defaults stay the expert's own when a collection moves only one kind
    grasp = [np.linalg.norm(sample_perturbation("grasp_offset", rng, offsets={"place_offset": (0.0, 0.001)}).offset)
             for _ in range(50)]
    assert min(grasp) >= 0.03 and max(grasp) <= 0.05


def test_camera_sees_the_goal_marker_and_the_cube(pick):
    seen = []
    for seed in range(10):
        pick.sim.reset(seed)
        img = pick.sim.rgb().astype(int)
        green = (img[..., 1] > 120) & (img[..., 0] < 110) & (img[..., 2] < 110)
        red = (img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)
        seen.append((green.sum() >= 4, red.sum() >= 4))  # several pixels each at 64x64
    goal, cube = np.mean(seen, axis=0)
    assert goal >= 0.6 and cube >= 0.8  # the gripper's start pose hides the goal in some seeds


def test_second_task_by_config_only():
    robot = SimRobot(ManiSkillConfig.from_dict({"task": "PushCube-v1", "image_size": 48}))
    robot.connect()
    try:
        ep = run_scripted_episode(robot, seed=1)
        assert ep.outcome == "success" and ep.images["front"].shape[1:] == (48, 48, 3)
        near = run_scripted_episode(robot, seed=1, perturbation_kind="place_offset")
        assert near.outcome == "near_success"
    finally:
        robot.close()


def test_bad_config_is_named():
    with pytest.raises(UnknownTaskError, match="available: PickCube-v1"):
        ManiSkillConfig(task="Nope-v9")
    with pytest.raises(ValueError, match="unknown keys \\['camera_zoom'\\]"):
        ManiSkillConfig.from_dict({"camera_zoom": 2})


def _wvl(args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "learning.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_wvl_collect_writes_a_store_with_outcomes(tmp_path):
    r = _wvl(["collect", "sim", "success=1", "near_success=1", f"out={tmp_path / 's'}", "sim.image_size=32"])
    assert r.returncode == 0, r.stderr
    assert "near_success" in r.stdout
    rows = pq.read_table(tmp_path / "s/meta/episodes").to_pylist()
    assert sorted(r["outcome"] for r in rows) == ["near_success", "success"]


def test_one_line_errors_for_bad_input(tmp_path):
    r = _wvl(["collect", "sim", "task=Nope-v1", f"out={tmp_path}/x"])
    assert r.returncode == 2 and "unknown simulated task 'Nope-v1'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()  # nothing written for a bad task
    r = _wvl(["collect", "sim", "sucess=3"])
    assert r.returncode == 2 and "unknown config key 'sucess'" in r.stderr
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    if os.geteuid() != 0:  # root ignores permissions
        r = _wvl(["collect", "sim", f"out={tmp_path}/ro/s"])
        assert r.returncode == 2 and "not writable" in r.stderr
    r = _wvl(["collect", "sim", "out=/proc/forbidden/s", "success=1", "near_success=0"])
    assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr


def test_missing_vulkan_driver_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")}
    env["WVL_VULKAN_DIR"] = str(tmp_path / "no-vulkan")
    r = _wvl(["collect", "sim", "success=1", "near_success=0", f"out={tmp_path}/s"], env=env)
    if r.returncode == 0:
        pytest.skip("a GPU Vulkan driver is installed on this machine")
    assert r.returncode == 2 and "make vulkan" in r.stderr and "Traceback" not in r.stderr


def test_noisy_expert_records_its_noise_free_labels(pick):
    """action_noise (DART): the executed approach is perturbed, the expert's own actions are kept as labels in
    extras["expert_action"]; once the gripper first closes nothing is perturbed."""
    ep = run_scripted_episode(pick, seed=3, perturbation_kind="none", rng=np.random.default_rng(0), action_noise=0.3)
    labels, commanded = ep.extras["expert_action"], ep.extras["action_commanded"]
    assert labels.shape == ep.actions.shape and ep.info["expert_action_noise"] == 0.3
    first_close = int(np.flatnonzero(labels[:, 6] < 0)[0])
    assert not np.allclose(commanded[:first_close, :3], labels[:first_close, :3], atol=1e-3)  # perturbed approach
    assert np.allclose(commanded[first_close:-1], labels[first_close:-1], atol=1e-6)  # the grasp and carry are not
    plain = run_scripted_episode(pick, seed=3, perturbation_kind="none")
    assert "expert_action" not in plain.extras


def test_expert_gain_sets_the_pace_of_the_demonstration(pick):
    """expert_gain: a lower gain reaches the same success in more, smaller steps (and says so in the episode)."""
    fast = run_scripted_episode(pick, seed=3, perturbation_kind="none")
    slow = run_scripted_episode(pick, seed=3, perturbation_kind="none", gain=0.3)
    assert fast.outcome == slow.outcome == "success" and len(slow) > len(fast)
    assert slow.info["expert_gain"] == 0.3 and "expert_gain" not in fast.info
    with pytest.raises(ValueError, match="expert_gain"):
        run_scripted_episode(pick, seed=3, perturbation_kind="none", gain=0.0)


def test_pickcube_default_workspace_is_recorded_and_overridable(pick):
    """PickCube spawns cube and goal within +-2.5 cm by default (ManiSkill: +-5 cm, by config), and every episode
    records the workspace in effect, so demos from different workspaces are never mixed silently."""
    assert pick.config.object_spawn_half_size == 0.025 and pick.sim.env.unwrapped.cube_spawn_half_size == 0.025
    assert ManiSkillConfig(task="PickCube-v1", spawn_half_size=0.05).object_spawn_half_size == 0.05
    assert ManiSkillConfig(task="PushCube-v1").object_spawn_half_size is None  # ManiSkill's own
    ep = run_scripted_episode(pick, seed=5, perturbation_kind="none")
    assert ep.info["workspace"] == {"spawn_half_size": 0.025, "max_goal_height": 0.0}
    pick.sim.reset(5)
    xy = pick.sim.env.unwrapped.cube.pose.p[0, :2].numpy()
    assert np.all(np.abs(xy) <= 0.025 + 1e-6), xy
