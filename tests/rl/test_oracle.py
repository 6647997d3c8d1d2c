"""The oracle control's rollouts: GRPO's trajectories played on the simulated robot, rewarded by the simulator."""

import numpy as np
import pytest
import torch

pytest.importorskip("mani_skill")

from learning.rl.grpo import GRPOConfig, grpo_update  # noqa: E402
from learning.rl.oracle import SimulatorRollouts  # noqa: E402
from robot.sim.maniskill import ManiSkillConfig, SimRobot  # noqa: E402
from tests.policy.conftest import tiny_compact  # noqa: E402

pytestmark = pytest.mark.sim


def test_simulator_rollouts_feed_grpo_the_decisions_it_played():
    robot = SimRobot(ManiSkillConfig(task="PickCube-v1", image_size=64))
    robot.connect()
    try:
        policy = tiny_compact(image_size=64, chunk_length=4, state_features=["ee_x", "ee_y", "ee_z", "gripper"],
                              state_mean=[0, 0, 0.1, 0.5], state_std=[0.05, 0.05, 0.05, 0.5]).eval()
        cfg = GRPOConfig(group_size=2, horizon_chunks=2, minibatch=8)
        collect = SimulatorRollouts(robot, seeds=[5, 7], instruction=policy.default_instruction, cfg=cfg)
        ro = collect(policy, np.array([1]), torch.Generator().manual_seed(0))
        assert len(ro.success) == 2 and set(ro.success.tolist()) <= {0.0, 1.0} and list(ro.group) == [0, 0]
        assert len(ro.traj) == ro.chunks_played.sum() and np.all(ro.chunks_played <= 2)
        assert ro.images.shape[1:] == (64, 64, 3) and ro.states.shape == (len(ro.traj), 4)
        assert collect.episodes == 2 and collect.sim_steps >= ro.chunks_played.sum() * 4 - 2  # the last chunk may stop early
        robot.sim.reset(7)  # the start is the seed's scene: the first decision of each trajectory saw its frame
        first = robot.sim.rgb()
        assert np.abs(ro.images[0].astype(int) - first.astype(int)).mean() < 1.0
        with torch.no_grad():  # the recorded log-probs are the policy's at the sampling temperature
            lp = policy.token_log_probs(ro.images, policy.default_instruction, ro.tokens, temperature=cfg.temperature,
                                        states=ro.states)
        assert torch.allclose(lp, ro.old_logp, atol=1e-5)
        ro.success[:] = [1.0, 0.0]  # an informative group: the update runs on these decisions
        stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), ro, policy.default_instruction, cfg)
        assert stats["updated"] == 1.0
    finally:
        robot.close()
