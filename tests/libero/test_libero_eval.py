"""`wvl eval-policy` on LIBERO: an exported policy through PolicyRuntime on the benchmark's fixed initial states."""

import numpy as np
import pytest

pytest.importorskip("libero.libero")
pytest.importorskip("torch")


@pytest.mark.slow
def test_evaluate_policy_on_libero_initial_states(tmp_path):
    from learning.data.store import EpisodeStore
    from learning.eval.policy_eval import RolloutConfig, evaluate_policy
    from learning.policy.export import export_policy
    from learning.policy.tokenizers import WordTokenizer
    from robot.sim.libero import LiberoConfig
    from tests.policy.conftest import tiny_compact

    sim = LiberoConfig(suite="libero_object", task=1, image_size=32, wrist_camera=False, max_steps=4)
    policy = tiny_compact(image_size=32, vocab=WordTokenizer.build([sim.instruction]).vocab, instructions=[sim.instruction])
    export_policy(policy, tmp_path / "art", version="tiny-0", check_inputs=2, control_hz=sim.control_hz)
    store = EpisodeStore(tmp_path / "rollouts")
    res = evaluate_policy(tmp_path / "art", sim, episodes=2, workers=1, rollout_cfg=RolloutConfig(execute_steps=2),
                          store=store, videos=tmp_path / "videos", max_videos=1)
    assert res.task == "libero_object/1" and res.rate.n == 2
    assert [r["seed"] for r in res.episodes] == [0, 1]  # the benchmark's initial states 0 and 1
    assert res.config["sim"]["kind"] == "libero" and res.config["sim"]["max_steps"] == 4
    ep = store.read(0)
    assert ep.task == "pick up the cream cheese and place it in the basket" and ep.rig == "sim-libero"
    assert len(ep) == 5 and ep.source == "policy" and np.all(np.abs(ep.actions) <= 1)
    assert ep.images["front"].shape == (5, 32, 32, 3)
    assert len(res.videos) == (1 if res.rate.successes < 2 else 0)
    with pytest.raises(ValueError, match="50 fixed initial states"):
        evaluate_policy(tmp_path / "art", sim, episodes=51, workers=1)
