import numpy as np
import pytest
import torch

from learning.rl.grpo import GRPOConfig, Rollouts, grpo_update
from tests.policy.conftest import tiny_compact


def _rollouts(policy, success, seed=0):
    rng = np.random.default_rng(seed)
    G = len(success)
    images = rng.integers(0, 255, (G, 16, 16, 3), dtype=np.uint8)
    instr = policy.default_instruction
    with torch.no_grad():
        _, tokens, _ = policy.sample(images, instr, temperature=1.6, generator=torch.Generator().manual_seed(seed))
        old = policy.token_log_probs(images, instr, tokens, temperature=1.6)
    return Rollouts(images=images, tokens=tokens, old_logp=old, traj=np.arange(G), success=np.asarray(success, np.float32),
                    group=np.zeros(G, np.int64), chunks_played=np.ones(G, np.int64), final_frames=images), instr


def test_a_grpo_step_raises_the_log_prob_of_the_advantaged_chunk():
    torch.manual_seed(0)
    policy = tiny_compact()
    ro, instr = _rollouts(policy, [1, 0, 0, 0])
    cfg = GRPOConfig(group_size=4, lr=3e-4, epochs=4, minibatch=4)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    stats = grpo_update(policy, opt, ro, instr, cfg)
    with torch.no_grad():
        new = policy.log_prob(ro.images, instr, ro.tokens, temperature=1.6)
    old = ro.old_logp.sum(-1)
    assert new[0] > old[0]  # the successful chunk became more likely
    assert torch.all(new[1:] < old[1:])  # the failed ones less likely
    assert stats["updated"] == 1.0 and stats["informative_groups"] == 1.0 and stats["imagined_success"] == 0.25
    assert 0.0 <= stats["clip_fraction"] <= 1.0 and stats["entropy"] > 0


def test_groups_that_all_agree_change_nothing():
    policy = tiny_compact()
    before = [p.detach().clone() for p in policy.parameters()]
    ro, instr = _rollouts(policy, [1, 1, 1, 1])
    cfg = GRPOConfig(group_size=4)
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), ro, instr, cfg)
    assert stats["updated"] == 0.0 and stats["informative_groups"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_config_errors_name_the_field():
    import pytest

    with pytest.raises(ValueError, match="grpo.group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="unknown keys \\['groupsize'\\]"):
        GRPOConfig.from_dict({"groupsize": 8})


def test_dead_reckoning_integrates_the_commanded_motion_like_the_safety_filter():
    from learning.rl.imagined_state import DeadReckoning

    r = DeadReckoning(["ee_x", "ee_y", "ee_z", "gripper"], closed_opening=0.45)
    chunks = np.zeros((2, 3, 7), np.float32)
    chunks[0, :, 0] = 0.5  # +5 cm per step in x, open
    chunks[0, :, 6] = 1.0
    chunks[1, :, :3] = 1.0  # (0.1, 0.1, 0.1) m asked: clipped to 0.1 m per step along the diagonal
    chunks[1, :, 6] = -1.0  # closing: the opening the demos show with the cube in the hand
    s = r.step(np.array([[0.0, 0.0, 0.1, 0.2], [0.0, 0.0, 0.1, 1.0]], np.float32), chunks)
    np.testing.assert_allclose(s[0], [0.15, 0.0, 0.1, 1.0], atol=1e-6)
    np.testing.assert_allclose(s[1], [0.3 / np.sqrt(3)] * 2 + [0.1 + 0.3 / np.sqrt(3), 0.45], atol=1e-6)
    with pytest.raises(ValueError, match="dead reckoning"):
        r.step(np.zeros((2, 3), np.float32), chunks)


def test_imagination_gives_a_state_policy_its_dead_reckoned_state():
    """GRPO with a state-input policy in a (tiny, real) world model: the state of each decision starts at the
    start frame's recorded state and follows the policy's own commands; the update uses the same states."""
    from learning.rl.grpo import imagine
    from learning.rl.imagined_state import DeadReckoning
    from learning.world_model.env import WorldModelEnv
    from learning.world_model.model import WorldModel
    from tests.world_model.conftest import tiny_config

    torch.manual_seed(0)
    wm = WorldModel.from_wm_config(tiny_config()).eval()
    features = ["ee_x", "ee_y", "ee_z", "gripper"]
    policy = tiny_compact(image_size=32, chunk_length=4, state_features=features, state_mean=[0, 0, 0.1, 0.5],
                          state_std=[0.05, 0.05, 0.05, 0.5])
    env = WorldModelEnv(wm, num_inference_steps=1, horizon=8, reward_threshold=0.999)
    starts = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    st0 = np.array([[0.0, 0.0, 0.1, 1.0], [0.05, -0.05, 0.12, 1.0]], np.float32)
    cfg = GRPOConfig(group_size=2, horizon_chunks=2, num_inference_steps=1, success_threshold=0.999, minibatch=4)
    instr = policy.default_instruction
    with pytest.raises(ValueError, match="robot state"):
        imagine(policy, env, starts, instr, cfg, torch.Generator().manual_seed(0))
    reckoner = DeadReckoning(features, closed_opening=0.5)
    ro = imagine(policy, env, starts, instr, cfg, torch.Generator().manual_seed(0), start_states=st0, reckoner=reckoner)
    assert ro.states is not None and ro.states.shape == (len(ro.traj), 4)
    np.testing.assert_allclose(ro.states[:4], np.repeat(st0, 2, axis=0))  # chunk 1: the recorded start states
    later = ro.states[4:]
    assert len(later) and np.all(np.abs(later[:, :3] - np.repeat(st0, 2, axis=0)[ro.traj[4:], :3]) <= 0.4 + 1e-6)
    assert set(np.round(later[:, 3], 3)) <= {1.0, 0.5}  # open, or the closed-on-the-cube opening
    ro.success[:] = [1, 0, 0, 1]  # informative groups, so the update really runs on the stored states
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), ro, instr, cfg)
    assert stats["updated"] == 1.0 and np.isfinite(stats["loss"])
