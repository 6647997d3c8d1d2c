"""The LIBERO robot through our wrapper: fixed initial states, the episode contract, the store, demos, SANS.

Rendering on a CPU costs ~0.1-0.3 s per step here, so rollouts are a few steps at 64x64 unless marked slow.
"""

import numpy as np
import pytest

pytest.importorskip("libero.libero")
pytest.importorskip("robosuite")

from learning.data.store import EpisodeStore  # noqa: E402
from robot.errors import DeviceNotConnectedError  # noqa: E402
from robot.sim.libero import LiberoConfig, LiberoRobot, UnknownLiberoTaskError, to_libero_action  # noqa: E402
from robot.sim.libero_collect import (  # noqa: E402
    ActionReplay,
    LiberoCollectStats,
    Start,
    _Planned,
    collect_sans,
    commands,
    demo_replay,
    read_demos,
    record_rollout,
)


@pytest.fixture(scope="module")
def robot():
    r = LiberoRobot(LiberoConfig(suite="libero_object", task=0, image_size=64))
    r.connect()
    yield r
    r.close()


def test_same_initial_state_gives_the_same_first_frame(robot):
    robot.sim.reset(3)  # the benchmark's fixed initial state 3
    front, wrist = robot.cameras["front"].read(), robot.cameras["wrist"].read()
    state = robot.arm.read_state()
    assert front.rgb.shape == wrist.rgb.shape == (64, 64, 3) and front.rgb.dtype == np.uint8
    for _ in range(3):  # move the arm and close the gripper so there is state to forget
        robot.arm.send_action(np.array([0.5, 0.3, -0.5, 0, 0, 0.2, -1], np.float32))
    assert not np.array_equal(robot.cameras["front"].read().rgb, front.rgb)
    robot.sim.reset(3)
    assert np.array_equal(robot.cameras["front"].read().rgb, front.rgb)
    assert np.array_equal(robot.cameras["wrist"].read().rgb, wrist.rgb)
    assert np.array_equal(robot.arm.read_state().joints, state.joints)
    robot.sim.reset(4)
    assert not np.array_equal(robot.cameras["front"].read().rgb, front.rgb)  # another initial state, another scene
    with pytest.raises(IndexError, match=r"50 fixed initial states \(0\.\.49\)"):
        robot.sim.reset(50)


def test_an_episode_depends_only_on_its_initial_state_not_on_the_episodes_before(robot):
    # ManiSkill's PhysX kept state across resets (tests/test_sim.py); MuJoCo's reset must not: the same initial state
    # and actions after different earlier episodes give the same frames and joints, bit for bit
    rng = np.random.default_rng(0)
    actions, others = rng.uniform(-1, 1, (2, 6, 7)).astype(np.float32)

    def play(index, acts):
        robot.sim.reset(index)
        seen = []
        for a in acts:
            robot.arm.send_action(a)
            seen.append((robot.cameras["front"].read().rgb.copy(), robot.arm.read_state().joints.copy()))
        return seen

    first = play(3, actions)
    play(4, others)
    again = play(3, actions)
    assert all(np.array_equal(f, g) and np.array_equal(j, k) for (f, j), (g, k) in zip(first, again))


def test_gripper_follows_the_contract_sign(robot):
    robot.sim.reset(0)
    opened = robot.arm.read_state().gripper
    for _ in range(12):  # robosuite ramps the finger command over ~8 steps, then the fingers travel
        sent = robot.arm.send_action(np.array([0, 0, 0, 0, 0, 0, -1], np.float32))  # contract: close
    closed = robot.arm.read_state().gripper
    assert opened > 0.9 and closed < 0.2 and sent[6] == -1 and to_libero_action(sent)[6] == 1
    assert robot.sim.steps == 12 and np.isclose(robot.arm.read_state().stamp, 12 / robot.config.control_hz)


def test_an_episode_collected_through_the_wrapper_round_trips_through_the_store(robot, tmp_path):
    ep = record_rollout(robot, Start(seed=7), _Planned(robot), max_steps=6)
    assert len(ep) == 7 and ep.cameras == ["front", "wrist"] and ep.images["front"].shape == (7, 64, 64, 3)
    assert ep.task == "pick up the alphabet soup and place it in the basket" and ep.fps == 20.0
    assert ep.rig == "sim-libero" and ep.outcome == "failure" and ep.rewards.max() == 0  # cut before the grasp
    assert ep.joints.shape == (7, 9) and np.all(np.abs(ep.actions) <= 1)
    assert ep.info["init_states"] == "sampled" and len(ep.info["start_state"]) == robot.sim.init_states.shape[1]
    store = EpisodeStore(tmp_path / "sans")
    store.append(ep)
    back = EpisodeStore(tmp_path / "sans", create=False).read(0)
    assert back.equals(ep, images=False)  # metadata (incl. the start state) and per-step data exact
    for cam in ep.cameras:  # H.264: close, not exact
        assert np.abs(back.images[cam].astype(int) - ep.images[cam]).mean() < 4
    # The start state stored with the episode replays it: same actions, same frames.
    replay = record_rollout(robot, Start(state=np.asarray(back.info["start_state"])), ActionReplay(commands(back)),
                            settle_after_success=10**9)
    assert np.array_equal(replay.actions[:-1], ep.actions[:-1])
    assert np.abs(replay.images["front"].astype(int) - ep.images["front"]).max() <= 2
    assert np.abs(replay.ee_pose[:, :3] - ep.ee_pose[:, :3]).max() < 1e-3


def test_demonstration_file_replays_through_the_wrapper(robot, tmp_path):
    h5py = pytest.importorskip("h5py")
    robot.sim.reset_sampled(11)
    start = robot.sim.start_state
    raw = np.array([[0, 0, -1, 0, 0, 0, -1]] * 4, np.float64)  # LIBERO's own action convention: -1 = open
    path = tmp_path / "pick_demo.hdf5"
    with h5py.File(path, "w") as f:  # LIBERO's (robomimic) layout
        g = f.create_group("data/demo_0")
        g["actions"], g["states"] = raw, np.tile(start, (4, 1))
    demos = read_demos(path)
    assert len(demos) == 1 and demos[0]["actions"].shape == (4, 7)
    ep = demo_replay(robot, demos[0])
    assert ep.source == "teleop" and ep.info["success_source"] == "demo" and len(ep) == 5
    assert np.all(ep.actions[:4, 6] == 1.0)  # LIBERO's -1 (open) is the contract's +1
    assert ep.ee_pose[3, 2] < ep.ee_pose[0, 2] - 0.01  # it moved down as the demo says
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_group("data/demo_0")["actions"] = raw
    with pytest.raises(ValueError, match="no 'states'"):
        read_demos(bad)


def test_unknown_suite_or_task_lists_the_valid_ones():
    with pytest.raises(UnknownLiberoTaskError, match="valid suites: libero_spatial, libero_object"):
        LiberoConfig(suite="libero_objects")
    with pytest.raises(UnknownLiberoTaskError, match=r"valid indices 0\.\.9.*1: pick up the cream cheese"):
        LiberoConfig.from_dict({"suite": "libero_object", "task": 10})
    cfg = LiberoConfig.from_dict({"suite": "libero_goal", "task": "open_the_middle_drawer_of_the_cabinet"})
    assert cfg.instruction == "open the middle drawer of the cabinet" and cfg.episode_steps == 300
    with pytest.raises(ValueError, match="sim config: unknown keys \\['camera'\\]"):
        LiberoConfig.from_dict({"camera": "front"})


def test_sim_libero_is_selected_by_config_only():
    from learning.cli import compose
    from robot.sim.registry import make_sim_robot

    cfg = compose("learning/collect", ["sim=libero", "sim.suite=libero_spatial", "task=2", "sim.wrist_camera=false"])
    robot = make_sim_robot(cfg.sim, cfg.task)  # lazy: no scene is built until connect()
    assert isinstance(robot, LiberoRobot) and list(robot.cameras) == ["front"] and robot.config.suite == "libero_spatial"
    assert robot.instruction.startswith("pick up the black bowl")
    with pytest.raises(DeviceNotConnectedError):
        robot.arm.read_state()


@pytest.mark.slow
def test_collect_sans_scripted_success_and_perturbed_replay(tmp_path):
    robot = LiberoRobot(LiberoConfig(suite="libero_object", task=0, image_size=32, wrist_camera=False))
    robot.connect()
    try:
        stats = LiberoCollectStats()
        eps = list(collect_sans(robot, 1, 1, seed=5, near_success_mix={"place_offset": 1.0}, stats=stats))
    finally:
        robot.close()
    success, near = eps
    assert success.outcome == "success" and success.rewards[-1] == 1 and success.info["success_source"] == "scripted"
    assert near.outcome == "near_success" and near.rewards[-1] == 0 and near.info["perturbed_from"] == success.uuid
    assert near.info["perturbation"] == "place_offset" and 0.085 <= np.linalg.norm(near.info["perturbation_offset_m"]) <= 0.11
    assert near.info["start_state"] == success.info["start_state"]  # same start, one perturbation
    assert stats.kept["success"] == 1 and stats.kept["near_success"] == 1 and stats.success_source == "scripted"
