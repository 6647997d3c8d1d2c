"""The oracle control's rollouts: GRPO's trajectories played on the simulated robot, rewarded by the simulator."""

import numpy as np
import pytest
import torch

pytest.importorskip("mani_skill")

from learning.rl.grpo import GRPOConfig, grpo_update  # noqa: E402
from learning.rl.oracle import SimulatorRollouts  # noqa: E402
from tests.policy.conftest import tiny_compact  # noqa: E402

pytestmark = pytest.mark.sim


SIM = {"kind": "maniskill", "image_size": 64}


def state_policy():
    return tiny_compact(image_size=64, chunk_length=4, state_features=["ee_x", "ee_y", "ee_z", "gripper"],
                        state_mean=[0, 0, 0.1, 0.5], state_std=[0.05, 0.05, 0.05, 0.5]).eval()


def test_simulator_rollouts_feed_grpo_the_decisions_it_played():
    policy = state_policy()
    cfg = GRPOConfig(group_size=2, horizon_chunks=2, minibatch=8)
    with SimulatorRollouts([5, 7], policy.default_instruction, cfg, SIM, "PickCube-v1") as collect:
        ro = collect(policy, np.array([1]), torch.Generator().manual_seed(0))
        assert len(ro.success) == 2 and set(ro.success.tolist()) <= {0.0, 1.0} and list(ro.group) == [0, 0]
        assert len(ro.traj) == ro.chunks_played.sum() and np.all(ro.chunks_played <= 2)
        assert ro.images.shape[1:] == (64, 64, 3) and ro.states.shape == (len(ro.traj), 4)
        assert collect.episodes == 2 and collect.sim_steps >= ro.chunks_played.sum() * 4 - 2  # the last chunk may stop early
        robot = collect._robot
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


def test_worker_processes_play_the_same_rollouts_with_the_current_weights():
    """Two simulator workers give GRPO the very rollouts one process gives (each episode samples from its own seed),
    and after an update they play the updated policy, not the one they started with."""
    policy = state_policy()
    cfg = GRPOConfig(group_size=2, horizon_chunks=2, minibatch=8)
    picks = np.array([0, 1, 0])
    batches = {}
    for workers in (1, 2):
        torch.manual_seed(1)
        p = state_policy()
        p.load_state_dict(policy.state_dict())
        with SimulatorRollouts([5, 7], p.default_instruction, cfg, SIM, "PickCube-v1", workers=workers) as collect:
            gen = torch.Generator().manual_seed(3)
            first = collect(p, picks, gen)
            with torch.no_grad():  # an "update": every weight moves, so the next rollouts' log-probs must follow
                for w in p.parameters():
                    w.add_(0.05 * torch.randn_like(w))
            second = collect(p, picks, gen)
            batches[workers] = (first, second, collect.sim_steps, collect.episodes)
        with torch.no_grad():
            lp = p.token_log_probs(second.images, p.default_instruction, second.tokens, temperature=cfg.temperature,
                                   states=second.states)
        assert torch.allclose(lp, second.old_logp, atol=1e-4)  # sampled by the updated weights
    (a1, a2, steps1, n1), (b1, b2, steps2, n2) = batches[1], batches[2]
    for x, y in ((a1, b1), (a2, b2)):
        assert torch.equal(x.tokens, y.tokens) and np.array_equal(x.traj, y.traj) and np.array_equal(x.success, y.success)
        assert np.array_equal(x.images, y.images) and np.array_equal(x.chunks_played, y.chunks_played)
        assert torch.allclose(x.old_logp, y.old_logp, atol=1e-5)
    assert (steps1, n1) == (steps2, n2) and n1 == 12
