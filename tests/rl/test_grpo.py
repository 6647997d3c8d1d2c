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


def test_the_probability_reward_favours_the_rollout_the_reward_head_rated_higher():
    """reward=probability: no rollout crossed the threshold (success all 0), the head's highest probability ranks them."""
    torch.manual_seed(0)
    policy = tiny_compact()
    ro, instr = _rollouts(policy, [0, 0, 0, 0])
    ro.reward_max = np.array([0.6, 0.1, 0.1, 0.1], np.float32)
    cfg = GRPOConfig(group_size=4, lr=3e-4, epochs=4, minibatch=4, reward="probability")
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0), ro, instr, cfg)
    with torch.no_grad():
        new = policy.log_prob(ro.images, instr, ro.tokens, temperature=1.6)
    old = ro.old_logp.sum(-1)
    assert stats["updated"] == 1.0 and stats["imagined_success"] == 0.0
    assert new[0] > old[0] and torch.all(new[1:] < old[1:])
    ro.reward_max = None  # the simulator's rollouts: 0/1 only
    with pytest.raises(ValueError, match="reward=probability"):
        grpo_update(policy, torch.optim.AdamW(policy.parameters()), ro, instr, cfg)
    with pytest.raises(ValueError, match="grpo.reward"):
        GRPOConfig(reward="dense")


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


def test_dead_reckoning_fits_the_arms_tracking_gain_from_episodes(tmp_path):
    """The gain is what the arm did per unit of command in the recorded episodes (here an arm that covers 60% of a
    nominal 0.1 m/unit), and the fitted reckoner integrates with it."""
    from learning.data.store import EpisodeStore
    from learning.rl.imagined_state import DeadReckoning, tracking_gain
    from tests.factories import random_episode

    store = EpisodeStore(tmp_path / "s")
    for seed in range(2):
        ep = random_episode(T=10, seed=seed)
        ep.ee_pose[:, :3] = ep.ee_pose[0, :3] + np.r_[np.zeros((1, 3)), np.cumsum(0.06 * ep.actions[:-1, :3], 0)]
        store.append(ep)
    assert tracking_gain(store, [0, 1]) == pytest.approx(0.06, rel=1e-4)
    r = DeadReckoning.fitted(["ee_x", "ee_y", "ee_z"], store, [0, 1])
    chunk = np.zeros((1, 2, 7), np.float32)
    chunk[0, :, 0] = 0.5
    np.testing.assert_allclose(r.step(np.zeros((1, 3), np.float32), chunk), [[0.06, 0.0, 0.0]], atol=1e-5)


def _state_imagination(wm, features):
    """A tiny state-input policy, its world-model env, 2 start frames with their robot states, a 2-chunk GRPO config."""
    from learning.world_model.env import WorldModelEnv

    policy = tiny_compact(image_size=32, chunk_length=4, state_features=features, state_mean=[0, 0, 0.1, 0.5],
                          state_std=[0.05, 0.05, 0.05, 0.5])
    env = WorldModelEnv(wm, num_inference_steps=1, horizon=8, reward_threshold=0.999)
    starts = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    st0 = np.array([[0.0, 0.0, 0.1, 1.0], [0.05, -0.05, 0.12, 1.0]], np.float32)
    cfg = GRPOConfig(group_size=2, horizon_chunks=2, num_inference_steps=1, success_threshold=0.999, minibatch=4)
    return policy, env, starts, st0, cfg


def test_imagination_gives_a_state_policy_its_dead_reckoned_state():
    """GRPO with a state-input policy in a (tiny, real) world model: the state of each decision starts at the
    start frame's recorded state and follows the policy's own commands; the update uses the same states."""
    from learning.rl.grpo import imagine
    from learning.rl.imagined_state import DeadReckoning
    from learning.world_model.model import WorldModel
    from tests.world_model.conftest import tiny_config

    torch.manual_seed(0)
    wm = WorldModel.from_wm_config(tiny_config(state_features=())).eval()  # no state head: dead reckoning
    features = ["ee_x", "ee_y", "ee_z", "gripper"]
    policy, env, starts, st0, cfg = _state_imagination(wm, features)
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


def test_imagination_takes_the_state_from_the_world_models_state_head():
    """A world model whose state head predicts the policy's state features gives the policy its state in imagination:
    no reckoner is needed, the first decisions see the recorded start states, later ones the head's (replayed here
    in a second env from the same seeds and chunks)."""
    from learning.rl.grpo import imagine
    from learning.world_model.env import WorldModelEnv
    from learning.world_model.model import WorldModel
    from tests.world_model.conftest import tiny_config

    torch.manual_seed(0)
    features = ["ee_x", "ee_y", "ee_z", "gripper"]
    wm = WorldModel.from_wm_config(tiny_config(state_features=tuple(features))).eval()
    policy, env, starts, st0, cfg = _state_imagination(wm, features)
    ro = imagine(policy, env, starts, policy.default_instruction, cfg, torch.Generator().manual_seed(0), start_states=st0)
    np.testing.assert_allclose(ro.states[:4], np.repeat(st0, 2, axis=0))
    chunks = policy.action_tokenizer.decode(ro.tokens[:4].numpy()).reshape(4, policy.chunk_length, -1)
    replay = WorldModelEnv(wm, num_inference_steps=1, horizon=8, reward_threshold=0.999)
    replay.reset(np.repeat(starts, 2, axis=0), policy.default_instruction, states=np.repeat(st0, 2, axis=0))
    replay.step(chunks)
    np.testing.assert_allclose(ro.states[4:], replay.state[ro.traj[4:]], atol=1e-5)
    assert not np.allclose(ro.states[4:], np.repeat(st0, 2, axis=0)[ro.traj[4:]])
    assert ro.reward_max.shape == (4,) and np.all((ro.reward_max > 0) & (ro.reward_max < 1))  # the head's best frame


@pytest.mark.parametrize("success, moves", [([1, 0, 0, 0], True), ([0, 0, 0, 0], False)])
def test_the_probe_sees_the_greedy_policy_move_only_when_an_advantage_moved_it(success, moves):
    from learning.rl.grpo import GreedyProbe

    policy = tiny_compact()
    ro, instr = _rollouts(policy, success)
    probe = GreedyProbe.take(policy, np.random.default_rng(1).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), instr)
    assert probe.drift(policy, instr) == {"probe/greedy_token_change": 0.0, "probe/greedy_action_delta": 0.0}
    cfg = GRPOConfig(group_size=4, lr=1e-2, epochs=4, minibatch=4)
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0), ro, instr, cfg)
    drift = probe.drift(policy, instr)
    if moves:  # a non-zero advantage and a large learning rate: the argmax of some probe tokens changed
        assert stats["updated"] == 1.0
        assert drift["probe/greedy_token_change"] > 0 and drift["probe/greedy_action_delta"] > 0
    else:  # all advantages 0: no step, the greedy policy is the starting one
        assert stats["updated"] == 0.0
        assert drift == {"probe/greedy_token_change": 0.0, "probe/greedy_action_delta": 0.0}


def test_a_batch_smaller_than_a_minibatch_is_one_minibatch_every_epoch_and_minibatches_are_about_equal():
    policy = tiny_compact()
    sizes = []
    token_log_probs = policy.token_log_probs

    def recording(images, *a, **kw):
        sizes.append(len(images))
        return token_log_probs(images, *a, **kw)

    policy.token_log_probs = recording
    ro, instr = _rollouts(policy, [1, 0, 0, 0])
    sizes.clear()
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), ro, instr,
                        GRPOConfig(group_size=4, minibatch=64, epochs=3))
    assert sizes == [4, 4, 4] and stats["optimizer_steps"] == 3.0  # 4 decisions < 64: the whole batch, 3 times
    ro, instr = _rollouts(policy, [1, 0, 0, 0, 1])
    sizes.clear()
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), ro, instr,
                        GRPOConfig(group_size=5, minibatch=4, epochs=1))
    assert sizes == [3, 2] and stats["optimizer_steps"] == 2.0  # 5 decisions, at most 4 per step: 3 + 2, not 4 + 1


def test_loss_norm_config_and_the_trajectory_default():
    assert GRPOConfig().loss_norm == "trajectory"
    for norm in ("token", "trajectory", "constant"):
        assert GRPOConfig(loss_norm=norm).loss_norm == norm
    with pytest.raises(ValueError, match=r"grpo.loss_norm: 'sequence' is not one of \['constant', 'token', 'trajectory'\]"):
        GRPOConfig.from_dict({"loss_norm": "sequence"})
    with pytest.raises(ValueError, match="grpo.probe_starts"):
        GRPOConfig(probe_starts=-1)


def test_token_norm_is_the_token_mean_and_trajectory_norm_weighs_each_rollout_equally():
    """One group: a success of 1 decision and three failures of 2 decisions each (at ratio 1 the loss is
    -sum_t w_t A_t). token mean: the failures' 6 decisions out-weigh the success's 1; trajectory: each of the 4
    rollouts weighs 1/4, and the advantages of a group sum to 0, so the loss is 0."""
    policy = tiny_compact()
    ro, instr = _rollouts(policy, [1, 0, 0, 0, 0, 0, 0])
    ro.traj = np.array([0, 1, 2, 3, 1, 2, 3])  # chunk 1: all four trajectories; chunk 2: the three failures
    ro.success = np.array([1, 0, 0, 0], np.float32)
    ro.chunks_played = np.array([1, 2, 2, 2])
    a_s, a_f = 3 / np.sqrt(3), -1 / np.sqrt(3)  # group advantages of [1, 0, 0, 0] (population std sqrt(3)/4)
    losses = {}
    for norm in ("token", "trajectory"):
        p = tiny_compact()
        cfg = GRPOConfig(group_size=4, minibatch=64, loss_norm=norm)
        losses[norm] = grpo_update(p, torch.optim.SGD(p.parameters(), lr=0.0), ro, instr, cfg)["loss"]
    assert losses["token"] == pytest.approx(-(a_s + 6 * a_f) / 7, abs=1e-5)
    assert losses["trajectory"] == pytest.approx(0.0, abs=1e-5)


def test_train_grpo_logs_the_greedy_drift_on_the_probe_set(tmp_path):
    import json

    from learning.rl.grpo import train_grpo
    from learning.world_model.env import WorldModelEnv
    from learning.world_model.model import WorldModel
    from tests.world_model.conftest import tiny_config

    torch.manual_seed(0)
    wm = WorldModel.from_wm_config(tiny_config()).eval()
    policy = tiny_compact(image_size=32, chunk_length=tiny_config().chunk)
    env = WorldModelEnv(wm, num_inference_steps=1, horizon=2 * tiny_config().chunk, reward_threshold=0.5)
    starts = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    cfg = GRPOConfig(steps=2, group_size=2, starts_per_step=2, horizon_chunks=2, num_inference_steps=1,
                     success_threshold=0.5, minibatch=8, lr=1e-2, epochs=2, probe_starts=2)
    res = train_grpo(policy, env, starts, policy.default_instruction, cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "grpo_log.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row, h in zip(rows, res.history):
        assert 0.0 <= row["probe/greedy_token_change"] <= 1.0 and row["probe/greedy_action_delta"] >= 0.0
        assert row["probe/greedy_token_change"] == h["probe/greedy_token_change"]
    assert [r["updated"] for r in rows] == [1.0, 0.0]  # (seeded) step 0 has an informative group, step 1 none
    assert rows[0]["probe/greedy_token_change"] > 0  # lr 1e-2 moved the greedy policy ...
    assert rows[1]["probe/greedy_token_change"] == rows[0]["probe/greedy_token_change"]  # ... a step without update did not


def test_keyframe_starts_come_with_the_state_recorded_at_that_frame(tmp_path):
    """WoVR's keyframe-initialised imagination: every K-th frame of each episode (one with K frames after it), with
    the robot state recorded at that frame, not the first one."""
    from learning.data.store import EpisodeStore
    from learning.rl.grpo import imagination_starts
    from learning.rl.imagined_state import keyframes, start_states
    from tests.factories import random_episode

    store = EpisodeStore(tmp_path / "s")
    for i in range(2):
        store.append(random_episode(T=20, seed=i))
    assert keyframes(store, [0, 1], 8) == [(0, 0), (0, 8), (1, 0), (1, 8)]
    assert keyframes(store, [0], 30) == [(0, 0)]  # a short episode still gives its first frame
    policy = tiny_compact(image_size=32, state_features=["ee_x", "ee_y", "ee_z", "gripper"],
                          state_mean=[0, 0, 0.1, 0.5], state_std=[0.05, 0.05, 0.05, 0.5])
    frames, states, reckoner = imagination_starts(policy, [(store, [0, 1])], "keyframes", stride=8)
    assert len(frames) == 4 and reckoner is not None
    assert np.array_equal(frames[1], store.frames(0)[8]) and np.array_equal(frames[3], store.frames(1)[8])
    assert np.allclose(states[1], start_states(store, [0], policy.state_features, [8])[0])
    assert not np.allclose(states[0], states[1])  # the arm moved between frame 0 and frame 8
    first, _, _ = imagination_starts(policy, [(store, [0, 1])], "first")
    assert len(first) == 2 and np.array_equal(first[1], store.frames(1)[0])
    with pytest.raises(ValueError, match="starts"):
        imagination_starts(policy, [(store, [0])], "middle")
