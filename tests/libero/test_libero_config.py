"""LIBERO robot: action mapping, replay/perturbation logic and bad input, without building a MuJoCo scene."""

import sys

import numpy as np
import pytest

from robot.sim.libero import GRIPPER_SIGN, LiberoNotInstalledError, from_libero_action, to_libero_action
from robot.sim.libero_collect import ActionReplay, perturbation_point, sample_offset


def test_action_mapping_flips_only_the_gripper_and_clips():
    a = np.array([0.5, -0.2, 1.5, 0.1, -0.1, 0.0, -1.0], np.float32)  # contract: close
    lib = to_libero_action(a)
    assert lib[6] == 1.0 and GRIPPER_SIGN == -1.0  # robosuite: +1 closes
    assert lib[2] == 1.0 and np.allclose(lib[[0, 1, 3, 4, 5]], a[[0, 1, 3, 4, 5]])
    assert np.allclose(from_libero_action(lib), np.clip(a, -1, 1))


def test_perturbation_points_come_from_the_gripper_channel():
    # approach up to step 3 (highest), descend, close at 6..9, carry, open at 12
    g = np.array([1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, 1, 1], np.float32)
    actions = np.zeros((14, 7), np.float32)
    actions[:, 6] = g
    z = np.array([0.20, 0.22, 0.25, 0.26, 0.15, 0.05, 0.04, 0.04, 0.1, 0.2, 0.2, 0.18, 0.18, 0.25])
    assert perturbation_point("grasp_offset", actions, z) == 3
    assert perturbation_point("place_offset", actions, z) == 12
    with pytest.raises(ValueError, match="never closes"):
        perturbation_point("place_offset", np.ones((5, 7), np.float32), z[:5])
    with pytest.raises(ValueError, match="not one of"):
        perturbation_point("yaw", actions, z)
    rng = np.random.default_rng(0)
    for kind, (lo, hi) in (("place_offset", (0.085, 0.11)), ("grasp_offset", (0.03, 0.045))):
        r = [np.linalg.norm(sample_offset(kind, rng)) for _ in range(50)]
        assert lo <= min(r) and max(r) <= hi


def test_action_replay_inserts_a_closed_loop_move_then_resumes():
    actions = np.tile(np.array([0.1, 0, 0, 0, 0, 0, -1], np.float32), (4, 1))
    replay = ActionReplay(actions, insert_at=2, offset=np.array([0.03, 0, 0]), hold_steps=2)
    tcp = np.zeros(3)
    out = []
    while not replay.done:
        a = replay.act({"tcp": tcp})
        out.append(a)
        if len(out) > 2 and len(out) <= 2 + 3:  # the inserted steps move the "hand" 1 cm each
            tcp = tcp + np.array([0.01, 0, 0])
    assert np.allclose(out[0], actions[0]) and np.allclose(out[1], actions[1])
    assert out[2][0] > 0 and out[2][6] == -1  # moving toward +x, gripper held closed
    n_insert = len(out) - 4 - 2
    assert n_insert == 3
    assert np.allclose(out[2 + n_insert], actions[2])  # resumes the recording
    assert np.allclose(out[-1][:6], 0) and out[-1][6] == -1  # hold steps


def test_missing_extra_says_how_to_install(monkeypatch):
    from robot.sim import libero

    for name in [m for m in sys.modules if m == "libero" or m.startswith("libero.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "libero", None)  # import libero -> ImportError, as when not installed
    with pytest.raises(LiberoNotInstalledError, match=r"world-vla-loop\[libero\]"):
        libero.LiberoConfig(suite="libero_object", task=0)
    from learning.cli import main

    assert main(["collect", "sim", "sim=libero", "task=0", "success=0", "near_success=0"]) == 2
