"""WorldModelEnv: batched, autoregressive, seedable imagination with the reward-threshold / horizon done rule."""

import numpy as np
import pytest
import torch

from learning.world_model.env import WorldModelEnv
from learning.world_model.model import WorldModel
from tests.factories import random_episode
from tests.world_model.conftest import tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldModel.from_wm_config(tiny_config()).eval()


def _starts(B: int) -> np.ndarray:
    return np.stack([random_episode(T=2, H=32, W=32, seed=s).images["front"][0] for s in range(B)])


def _chunks(B: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, B, 4, 7)).astype(np.float32)


def test_batch_results_equal_per_sample_results(model):
    B, n = 3, 2
    starts, chunks = _starts(B), _chunks(B, n)
    env = WorldModelEnv(model, num_inference_steps=2, horizon=100)
    env.reset(starts, "pick up the red cube", seed=7)
    batched = [env.step(chunks[i]) for i in range(n)]
    for b in range(B):
        single = WorldModelEnv(model, num_inference_steps=2, horizon=100)
        single.reset(starts[b:b + 1], ["pick up the red cube"], seed=[7 + b])
        for i in range(n):
            frames, rewards, done = single.step(chunks[i][b:b + 1])
            # Batched matrix products round differently from single ones: allow one grey level.
            assert np.abs(frames[0].astype(int) - batched[i][0][b].astype(int)).max() <= 1
            assert np.allclose(rewards[0], batched[i][1][b], atol=1e-4)
            assert done[0] == batched[i][2][b]


def test_seeded_rollouts_reproduce_and_differ_by_seed(model):
    starts, chunks = _starts(2), _chunks(2, 1)
    env = WorldModelEnv(model, horizon=100)
    runs = []
    for seed in (1, 1, 2):
        env.reset(starts, "pick", seed=seed)
        runs.append(env.step(chunks[0])[0])
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_autoregressive_conditioning_and_shapes(model):
    env = WorldModelEnv(model, horizon=100)
    obs = env.reset(_starts(2), "pick")
    assert obs.shape == (2, 32, 32, 3) and obs.dtype == np.uint8
    frames, rewards, done = env.step(_chunks(2, 1)[0])
    assert frames.shape == (2, 4, 32, 32, 3) and frames.dtype == np.uint8
    assert rewards.shape == (2, 4) and rewards.dtype == np.float32 and bool(((rewards >= 0) & (rewards <= 1)).all())
    assert done.shape == (2,) and done.dtype == bool
    # the next call conditions on the last generated frame
    assert np.array_equal(env._cond[:, -1].numpy(), frames[:, -1])


def test_done_by_horizon_and_by_reward_threshold(model):
    env = WorldModelEnv(model, horizon=8)
    env.reset(_starts(2), "pick")
    chunks = _chunks(2, 3)
    _, rewards, done = env.step(chunks[0])
    assert not done.any() or (rewards > 0.9).any()
    _, _, done = env.step(chunks[1])
    assert done.all()  # 8 frames = horizon
    low = WorldModelEnv(model, horizon=100, reward_threshold=1e-6)
    low.reset(_starts(2), "pick")
    _, rewards, done = low.step(chunks[0])
    assert bool((rewards > 1e-6).any(1).all()) and done.all()


def test_model_without_reward_head_needs_a_frame_reward():
    m = WorldModel.from_wm_config(tiny_config(reward_head=False)).eval()
    with pytest.raises(ValueError, match="reward_fn"):
        WorldModelEnv(m)
    env = WorldModelEnv(m, reward_fn=lambda frames: frames.mean((2, 3, 4)) / 255.0)
    env.reset(_starts(1), "pick")
    frames, rewards, _ = env.step(_chunks(1, 1)[0])
    assert np.allclose(rewards, frames.mean((2, 3, 4)) / 255.0)


def test_bad_input_names_the_mismatch(model):
    env = WorldModelEnv(model)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_chunks(1, 1)[0])
    with pytest.raises(ValueError, match=r"\(B, 32, 32, 3\) uint8.*\(1, 64, 64, 3\)"):
        env.reset(np.zeros((1, 64, 64, 3), np.uint8), "pick")
    with pytest.raises(ValueError, match="2 instructions for 1 frames"):
        env.reset(_starts(1), ["a", "b"])
    env.reset(_starts(2), "pick")
    with pytest.raises(ValueError, match="3 actions per chunk, the world model predicts 4"):
        env.step(np.zeros((2, 3, 7), np.float32))
    with pytest.raises(ValueError, match=r"expected \(2, 4, 7\)"):
        env.step(np.zeros((1, 4, 7), np.float32))
    with pytest.raises(ValueError, match="num_inference_steps"):
        WorldModelEnv(model, num_inference_steps=0)


def test_state_head_gives_each_frame_a_robot_state(model):
    """With the robot states of the start frames at reset, every step gives (B, K, S) imagined states, the last of
    which is the state the next step starts from; a rollout's states do not depend on its batch-mates."""
    S = len(model.wm_config.state_features)
    assert S == 4  # the default: TCP position + gripper opening (robot.state.DEFAULT_POLICY_STATE)
    starts, chunks = _starts(3), _chunks(3, 2)
    st0 = np.array([[0.0, 0.0, 0.1, 1.0], [0.05, -0.05, 0.12, 1.0], [0.02, 0.03, 0.05, 0.5]], np.float32)
    env = WorldModelEnv(model, num_inference_steps=2, horizon=100)
    env.reset(starts, "pick", seed=3, states=st0)
    env.step(chunks[0])
    first = env.states.copy()
    assert first.shape == (3, 4, S) and first.dtype == np.float32
    np.testing.assert_array_equal(env.state, first[:, -1])
    env.step(chunks[1])
    assert env.states.shape == (3, 4, S) and not np.allclose(env.states, first)
    alone = WorldModelEnv(model, num_inference_steps=2, horizon=100)
    alone.reset(starts[1:2], "pick", seed=[4], states=st0[1:2])
    alone.step(chunks[0][1:2])
    np.testing.assert_allclose(alone.states[0], first[1], atol=1e-5)
    plain = WorldModelEnv(model, num_inference_steps=2, horizon=100)
    plain.reset(starts, "pick")
    plain.step(chunks[0])
    assert plain.states is None and plain.state is None  # no states at reset: none imagined
    with pytest.raises(ValueError, match=r"reset states: expected \(3, 4\)"):
        plain.reset(starts, "pick", states=st0[:, :3])
    headless = WorldModelEnv(WorldModel.from_wm_config(tiny_config(state_features=())).eval(), horizon=100)
    with pytest.raises(ValueError, match="no state head"):
        headless.reset(starts, "pick", states=st0)
