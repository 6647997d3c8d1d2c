"""SFT: the loss learns, checkpoints resume, the config refuses bad input, `wvl sft` runs."""

import json

import numpy as np
import pytest
import torch

from learning.cli import main as wvl
from learning.policy import load_policy
from learning.policy.sft import (SFTConfig, aux_targets, load_demos, random_shift, select_episodes, sft_aux_loss, sft_loss,
                                 train_sft)
from tests.policy.conftest import INSTRUCTION, tiny_compact

TINY_MODEL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2, "conv_channels": [8, 16], "max_instruction_len": 12}


def tiny_cfg(store, out, **kw) -> SFTConfig:
    d = dict(store=str(store.root), out=str(out), max_episodes=3, val_episodes=1, steps=4, batch_size=8, warmup_steps=1,
             log_every=1, val_every=2, checkpoint_every=2, threads=1, model=TINY_MODEL)
    d.update(kw)
    return SFTConfig.from_dict(d)


def test_a_few_steps_on_one_batch_fit_it():
    policy = tiny_compact().train()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    chunks = rng.uniform(-1, 1, (8, 8, 7)).astype(np.float32)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    losses = []
    for _ in range(40):
        loss, _ = sft_loss(policy, images, [INSTRUCTION] * 8, chunks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(256), abs=0.3)  # an untrained policy is close to uniform
    assert losses[-1] < 0.5 * losses[0]
    assert any(not torch.equal(p, before[n]) for n, p in policy.named_parameters())


def test_episode_selection_is_seeded_and_keeps_validation_apart(tiny_store, tmp_path):
    cfg = tiny_cfg(tiny_store, tmp_path / "o")
    train, val = select_episodes(tiny_store, cfg)
    assert len(train) == 3 and len(val) == 1 and not set(train) & set(val)
    assert set(train + val) <= set(tiny_store.indices(outcomes=("success",)))
    assert (train, val) == select_episodes(tiny_store, cfg)
    demos = load_demos(tiny_store, train, 8, None)
    assert demos.images.shape == (3 * 11, 16, 16, 3) and demos.chunks.shape == (33, 8, 7)


def test_random_shift_keeps_shape_and_moves_content():
    img = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    out = random_shift(img, 3, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert random_shift(img, 0, np.random.default_rng(1)) is img


def test_train_sft_writes_policy_metrics_and_resumes(tiny_store, tmp_path):
    out = tmp_path / "run"
    final = train_sft(tiny_cfg(tiny_store, out, steps=3), tiny_store)
    assert final == out / "policy"
    policy = load_policy(final)
    assert policy.config.instructions == ["pick up the red cube"]
    assert len(policy.config.image_mean) == 3 and policy.config.action_stats["min"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "losses/val_nll" in rows[1] and np.isfinite(rows[-1]["losses/train_nll"])
    assert (out / "checkpoints" / "step-000002" / "training_state.pt").exists()
    summary = json.loads((out / "sft_summary.json").read_text())
    assert len(summary["train_episodes"]) == 3 and summary["steps"] == 3

    # A longer run in the same folder continues from the newest checkpoint (step 2), not from scratch.
    train_sft(tiny_cfg(tiny_store, out, steps=5), tiny_store)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 3, 4, 5]


def test_config_refuses_bad_values_naming_the_field(tiny_store, tmp_path):
    with pytest.raises(ValueError, match="outcomes"):
        tiny_cfg(tiny_store, tmp_path, outcomes=["great"])
    with pytest.raises(ValueError, match="unknown keys.*'stepz'"):
        SFTConfig.from_dict({"store": "s", "out": "o", "stepz": 3})
    with pytest.raises(ValueError, match="model.d_model"):
        tiny_cfg(tiny_store, tmp_path, model={**TINY_MODEL, "d_model": 30, "n_heads": 4})
    with pytest.raises(ValueError, match="hf.path"):
        tiny_cfg(tiny_store, tmp_path, policy="hf")
    with pytest.raises(ValueError, match="no \\['failure'\\] episodes"):
        train_sft(tiny_cfg(tiny_store, tmp_path / "x", outcomes=["failure"]), tiny_store)


def test_wvl_sft_command_runs_two_steps(tiny_store, tmp_path, capsys):
    rc = wvl(["sft", f"store={tiny_store.root}", f"out={tmp_path / 'cli'}", "steps=2", "batch_size=4", "max_episodes=2",
              "val_episodes=1", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.conv_channels=[8,16]"])
    assert rc == 0
    assert (tmp_path / "cli" / "policy" / "config.json").exists()
    assert "val NLL per token" in capsys.readouterr().out
    assert wvl(["sft", f"store={tmp_path / 'nope'}", f"out={tmp_path / 'o2'}"]) == 2


def test_aux_object_target_is_where_the_frame_shows_the_object():
    """Before the first close the object rests where the gripper will close on it; from then on it is in the hand."""
    T = 6
    ee = np.zeros((T, 6), np.float32)
    ee[:, 0] = np.arange(T) * 0.1  # the gripper moves along x
    grip = np.full(T, 0.04, np.float32)
    actions = np.zeros((T, 7), np.float32)
    actions[:, 6] = [1, 1, 1, -1, -1, -1]  # closes at t = 3
    obj = lambda t: aux_targets(ee, grip, actions, t)[4:7]
    assert np.allclose(obj(0), ee[3, :3]) and np.allclose(obj(2), ee[3, :3])
    assert np.allclose(obj(4), ee[4, :3]) and np.allclose(obj(5), ee[5, :3])
    assert np.allclose(aux_targets(ee, grip, actions, 1)[7:], ee[-1, :3])  # the end of the episode
    actions[:, 6] = 1  # never closed: the object is taken to be where the episode ended
    assert np.allclose(obj(1), ee[-1, :3])


def test_selection_warns_when_validation_leaves_almost_nothing_to_train_on(tiny_store, tmp_path, caplog):
    """4 successes and val_episodes=3: one training episode, said out loud (README issue 21, item 10)."""
    with caplog.at_level("WARNING", logger="learning.policy.sft"):
        train, val = select_episodes(tiny_store, tiny_cfg(tiny_store, tmp_path / "o", max_episodes=None, val_episodes=3))
    assert len(train) == 1 and len(val) == 3
    assert "training on only 1 episode(s)" in caplog.text and "val_episodes=3" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="learning.policy.sft"):
        select_episodes(tiny_store, tiny_cfg(tiny_store, tmp_path / "o"))  # 3 train, 1 val: fine
    assert "training on only" not in caplog.text


def test_gaussian_bin_targets_reduce_to_the_nll_and_prefer_near_misses():
    """label_sigma_bins: the cross-entropy against a Gaussian over the bins; a tiny std is the one-hot NLL, and with
    a wider one a prediction one bin off costs less than one 50 bins off (one-hot targets price both alike)."""
    policy = tiny_compact()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    chunks = rng.uniform(-0.5, 0.5, (4, 8, 7)).astype(np.float32)
    loss, nll, _, mse = sft_aux_loss(policy, images, [INSTRUCTION] * 4, chunks, None, label_sigma_bins=1e-3)
    assert loss.item() == pytest.approx(nll.item(), rel=1e-5) and mse.item() == 0.0
    assert nll.item() == pytest.approx(sft_loss(policy, images, [INSTRUCTION] * 4, chunks)[0].item(), rel=1e-5)

    target = policy.actions_to_tokens(chunks)

    def loss_if_peaked_at(offset: int) -> float:
        """The loss of a policy whose every token is certain of bin (demonstrated + offset)."""
        peak = torch.nn.functional.one_hot((target + offset).clamp(0, 255), 256).float() * 20.0  # (B, N, V)
        orig = policy.logits_and_aux
        policy.logits_and_aux = lambda *a, **k: (peak, None)
        try:
            return sft_aux_loss(policy, images, [INSTRUCTION] * 4, chunks, None, label_sigma_bins=3.0)[0].item()
        finally:
            policy.logits_and_aux = orig

    assert loss_if_peaked_at(0) < loss_if_peaked_at(1) < loss_if_peaked_at(50)
    with pytest.raises(ValueError, match="label_sigma_bins"):
        SFTConfig.from_dict({"store": "s", "out": "o", "label_sigma_bins": -1})
    with pytest.raises(ValueError, match="label_sigma_bins"):
        SFTConfig.from_dict({"store": "s", "out": "o", "label_sigma_bins": 2, "policy": "hf", "hf": {"path": "x"}})


def test_expert_action_labels_come_from_the_extras_column(tmp_path):
    """action_labels=expert_action trains on a noisy expert's noise-free labels (extras.expert_action), not on the
    executed actions; a store without them is refused naming the column."""
    from learning.data.store import EpisodeStore
    from tests.factories import random_episode

    store = EpisodeStore(tmp_path / "s")
    labels = []
    for i in range(2):
        ep = random_episode(T=12, H=16, W=16, seed=i)
        ep.extras["expert_action"] = np.clip(ep.actions * 0.5 + 0.1, -1, 1).astype(np.float32)
        labels.append(ep.extras["expert_action"])
        store.append(ep)
    executed = load_demos(store, [0, 1], 8, None)
    expert = load_demos(store, [0, 1], 8, None, action_labels="expert_action")
    assert np.allclose(expert.chunks[0, :, :6], labels[0][:8, :6]) and not np.allclose(executed.chunks, expert.chunks)
    plain = EpisodeStore(tmp_path / "plain")
    plain.append(random_episode(T=12, H=16, W=16))
    with pytest.raises(ValueError, match="extras.expert_action"):
        load_demos(plain, [0], 8, None, action_labels="expert_action")
    with pytest.raises(ValueError, match="action_labels"):
        SFTConfig.from_dict({"store": "s", "out": "o", "action_labels": "teleop"})


def test_mean_action_weight_punishes_a_chunk_shrunk_toward_zero():
    """mean_action_weight: an MSE on the expected action under the bins; a distribution centred on half the
    demonstrated action costs more with it, the exact one costs (almost) nothing more."""
    policy = tiny_compact()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    chunks = rng.uniform(-0.8, 0.8, (2, 8, 7)).astype(np.float32)
    orig = policy.logits_and_aux

    def loss(chunk_centre: np.ndarray, weight: float) -> float:
        peak = torch.nn.functional.one_hot(policy.actions_to_tokens(chunk_centre), 256).float() * 30.0
        policy.logits_and_aux = lambda *a, **k: (peak, None)
        try:
            return sft_aux_loss(policy, images, [INSTRUCTION] * 2, chunks, None, mean_action_weight=weight)[0].item()
        finally:
            policy.logits_and_aux = orig

    extra_exact = loss(chunks, 10.0) - loss(chunks, 0.0)
    extra_shrunk = loss(0.5 * chunks, 10.0) - loss(0.5 * chunks, 0.0)
    assert extra_exact < 1e-3 < extra_shrunk
    with pytest.raises(ValueError, match="mean_action_weight"):
        SFTConfig.from_dict({"store": "s", "out": "o", "mean_action_weight": -1})


def test_init_from_fine_tunes_a_policy_on_several_stores(tiny_store, tmp_path):
    from learning.data.store import EpisodeStore
    from tests.factories import random_episode

    base = train_sft(tiny_cfg(tiny_store, tmp_path / "base", steps=2), tiny_store)
    extra = EpisodeStore(tmp_path / "extra")
    for i, outcome in enumerate(["success", "failure", "success"]):
        extra.append(random_episode(T=12, H=16, W=16, seed=10 + i, outcome=outcome))
    # an architecture this config would not build: init_from keeps the base policy's, not the config's model
    cfg = tiny_cfg(tiny_store, tmp_path / "ft", steps=2, init_from=str(base), extra_stores=[str(extra.root)],
                   model={**TINY_MODEL, "d_model": 64})
    final = train_sft(cfg, tiny_store)
    before, after = load_policy(base), load_policy(final)
    assert after.config.d_model == before.config.d_model == 32
    assert after.config.image_mean == before.config.image_mean  # its normalisation statistics are kept
    assert any(not torch.equal(p, before.state_dict()[n]) for n, p in after.state_dict().items())
    summary = json.loads((tmp_path / "ft" / "sft_summary.json").read_text())
    assert summary["init_from"] == str(base)
    assert summary["extra_train_episodes"] == {str(extra.root): [0, 2]}  # the successes only, none held out
    assert summary["train_windows"] == (3 + 2) * 11
    with pytest.raises(ValueError, match="init_from.*chunk_length"):
        train_sft(tiny_cfg(tiny_store, tmp_path / "bad", chunk_length=4, init_from=str(base)), tiny_store)
    with pytest.raises(ValueError, match="init_from: no policy folder"):
        train_sft(tiny_cfg(tiny_store, tmp_path / "bad2", init_from=str(tmp_path / "nope")), tiny_store)
