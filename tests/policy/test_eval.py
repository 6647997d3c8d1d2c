"""Success-rate statistics (pure maths) and the policy evaluation on the simulated robot (sim-marked)."""

import numpy as np
import pytest

from learning.eval.stats import SuccessRate, newcombe_difference, wilson_interval


@pytest.mark.parametrize("s,n,low,high", [
    (0, 10, 0.0, 0.2775),  # Wilson 1927 / Newcombe 1998 table values
    (5, 10, 0.2366, 0.7634),
    (50, 100, 0.4038, 0.5962),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),  # Newcombe 1998, example (a)
])
def test_wilson_interval_matches_published_values(s, n, low, high):
    lo, hi = wilson_interval(s, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges_and_errors():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(5, 10, 0.90)
    lo95, hi95 = wilson_interval(5, 10, 0.95)
    assert lo95 < lo90 < 0.5 < hi90 < hi95
    with pytest.raises(ValueError, match="successes/n"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, 1.5)


def test_newcombe_difference_matches_the_published_example():
    # Newcombe 1998 (Stat Med 17:873), method 10, example: 56/70 vs 48/80 -> +0.2000 [0.0524, 0.3339]
    d, lo, hi = newcombe_difference(48, 80, 56, 70)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)


def test_success_rate_formats_rate_and_interval():
    r = SuccessRate(23, 100)
    assert str(r).startswith("23.0% [") and "(23/100, 95% Wilson CI)" in str(r)
    d = r.to_dict()
    assert d["rate"] == 0.23 and d["ci_low"] < 0.23 < d["ci_high"]


@pytest.mark.sim
@pytest.mark.slow
def test_evaluate_policy_on_the_simulated_robot(tmp_path):
    """Two short rollouts of an exported (untrained) policy through PolicyRuntime in two spawned simulators,
    saved as policy episodes with a failure video."""
    pytest.importorskip("mani_skill")
    from learning.data.store import EpisodeStore
    from learning.eval.policy_eval import RolloutConfig, evaluate_policy
    from learning.policy.export import export_policy
    from robot.sim.maniskill import ManiSkillConfig
    from tests.policy.conftest import tiny_compact

    sim = ManiSkillConfig(max_steps=4)
    instruction = sim.instruction
    from learning.policy.tokenizers import WordTokenizer

    policy = tiny_compact(image_size=64, vocab=WordTokenizer.build([instruction]).vocab, instructions=[instruction],
                          conv_channels=[8, 16, 32, 32])
    export_policy(policy, tmp_path / "art", version="tiny-0", check_inputs=2)
    store = EpisodeStore(tmp_path / "rollouts")
    res = evaluate_policy(tmp_path / "art", sim, episodes=2, workers=2, rollout_cfg=RolloutConfig(execute_steps=2),
                          store=store, videos=tmp_path / "videos", max_videos=1)
    assert res.rate.n == 2 and res.policy_version == "tiny-0"
    assert [r["seed"] for r in res.episodes][0] >= 1_000_000
    assert all(r["policy_calls"] == 2 for r in res.episodes if not r["success"])  # 4 steps, 2 per chunk
    assert len(store) == 2 and set(store.indices(source="policy")) == {0, 1}
    ep = store.read(0)
    assert ep.policy_version == "tiny-0" and ep.outcome in ("success", "failure") and ep.info["evaluation"]
    assert len(ep) == 5 and np.all(np.abs(ep.actions) <= 1)  # 4 steps + the closing observation
    assert len(res.videos) == (1 if res.rate.successes < 2 else 0)


@pytest.mark.sim
@pytest.mark.slow
def test_eval_policy_and_the_robot_process_play_the_same_rollouts(tmp_path):
    """`wvl eval-policy` and the robot process (`wvl robot run`; `wvl robot deploy`, the loop's robot, runs the same
    `robot.rig.play_episodes`) on the same seeds: the same scenes, the same actions step for step through the
    same safety filter, and the same success labels (robot.sim.rollout: the flag at the episode's end)."""
    pytest.importorskip("mani_skill")
    from learning.cli import main
    from learning.data.store import EpisodeStore
    from learning.eval.policy_eval import evaluate_policy
    from learning.policy.export import export_policy
    from learning.policy.tokenizers import WordTokenizer
    from robot.sim.maniskill import ManiSkillConfig
    from robot.sinks import read_episode_file
    from tests.policy.conftest import tiny_compact

    sim = ManiSkillConfig(max_steps=6)
    policy = tiny_compact(image_size=64, vocab=WordTokenizer.build([sim.instruction]).vocab, instructions=[sim.instruction],
                          conv_channels=[8, 16, 32, 32], state_features=["ee_x", "ee_y", "ee_z", "gripper"],
                          state_mean=[0.0, 0.0, 0.1, 0.5], state_std=[0.05, 0.05, 0.05, 0.5])
    export_policy(policy, tmp_path / "art", version="agree-0", check_inputs=2)
    seed = 2_000_000
    store = EpisodeStore(tmp_path / "eval")
    res = evaluate_policy(tmp_path / "art", sim, episodes=2, workers=1, seed=seed, store=store)
    out = tmp_path / "outbox"
    assert main(["robot", "run", "rig=sim", "source=policy", f"policy.artifact={tmp_path / 'art'}", "episodes=2",
                 f"seed={seed}", "sim.max_steps=6", "runner.max_steps=6", f"outbox={out}"]) == 0
    robot_eps = sorted((read_episode_file(p) for p in out.glob("*.episode")), key=lambda e: e.info["seed"])
    eval_eps = sorted((store.read(i) for i in range(len(store))), key=lambda e: e.info["seed"])
    assert [e.info["seed"] for e in robot_eps] == [e.info["seed"] for e in eval_eps] == sorted(r["seed"] for r in res.episodes)
    for a, b in zip(eval_eps, robot_eps):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)  # the same policy on the same frames and states
        np.testing.assert_allclose(a.ee_pose, b.ee_pose, atol=1e-5)
        assert a.outcome == b.outcome and list(a.rewards) == list(b.rewards)
