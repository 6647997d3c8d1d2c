"""Training (wvl train-wm: steps, resume, refinement with a store mix, balanced sampling) and evaluation
(wvl eval-wm: wm_eval.json, videos) on a synthetic store, tiny config, through the real CLI."""

import json

import numpy as np
import pytest
import torch

from learning.cli import main as wvl
from learning.data.windows import WindowDataset, WindowSpec
from learning.eval.success_classifier import train_success_classifier
from learning.eval.world_model import evaluate_world_model, replay_actions
from learning.world_model.model import load_world_model
from learning.world_model.train import STATE_FILE, WindowSampler
from tests.world_model.conftest import make_store, tiny_config, tiny_overrides


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    return make_store(root / "sans"), make_store(root / "rollouts", n_per_outcome=1, seed=100), root


def test_train_resume_is_exact_and_writes_tensorboard(stores, tmp_path):
    sans, _, _ = stores
    base = tiny_overrides(stores=f"[{sans.root}]")
    assert wvl(["train-wm", *base, f"out={tmp_path / 'a'}", "train.steps=4"]) == 0
    assert wvl(["train-wm", *base, f"out={tmp_path / 'b'}", "train.steps=2"]) == 0
    assert torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)["step"] == 2
    assert wvl(["train-wm", *base, f"out={tmp_path / 'b'}", "train.steps=4"]) == 0  # resumes at 2
    a = torch.load(tmp_path / "a" / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["ema"]:
        assert torch.allclose(a["ema"][k], b["ema"][k], atol=1e-6), k  # resuming = not stopping
    assert list((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))
    meta = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert meta["step"] == 4 and meta["windows"] == {"success": 19, "near_success": 19, "failure": 19}  # (10 - 1) + (11 - 1) per outcome
    model = load_world_model(tmp_path / "a", expect=tiny_config())
    assert model.wm_config.chunk == 4


def test_refinement_from_a_checkpoint_on_old_and_new_stores(stores, tmp_path, capsys):
    sans, rollouts, _ = stores
    base = tiny_overrides(stores=f"[{sans.root}]")
    assert wvl(["train-wm", *base, f"out={tmp_path / 'v0'}", "train.steps=2"]) == 0
    refine = tiny_overrides(stores=f"[{sans.root},{rollouts.root}]")
    assert wvl(["train-wm", *refine, f"out={tmp_path / 'v1'}", f"init_from={tmp_path / 'v0'}", "train.steps=2", "train.mix=[0.5,0.5]"]) == 0
    meta = json.loads((tmp_path / "v1" / "train_config.json").read_text())
    assert meta["init_from"] == str(tmp_path / "v0") and len(meta["stores"]) == 2
    # a checkpoint of another architecture is refused, naming the field
    rc = wvl(["train-wm", *refine, f"out={tmp_path / 'v2'}", f"init_from={tmp_path / 'v0'}", "train.steps=1", "model.reward_hidden=16"])
    assert rc == 2 and "reward_hidden: 32 != 16" in capsys.readouterr().err
    rc = wvl(["train-wm", *refine, f"out={tmp_path / 'v2'}", "train.steps=1", "train.mix=[1.0]"])
    assert rc == 2 and "train.mix: 1 shares for 2 stores" in capsys.readouterr().err


def test_windows_from_a_store_with_other_image_size_are_refused(tmp_path, capsys):
    big = make_store(tmp_path / "big", n_per_outcome=1, size=64)
    rc = wvl(["train-wm", *tiny_overrides(stores=f"[{big.root}]"), f"out={tmp_path / 'x'}", "train.steps=1"])
    assert rc == 2 and "images are 64x64, the world model is built for 32x32" in capsys.readouterr().err


def test_batches_are_balanced_by_outcome_and_mixed_by_store(stores):
    sans, rollouts, _ = stores
    spec = WindowSpec(chunk=4)
    rng = np.random.default_rng(0)
    s = WindowSampler([sans], spec, 32, ("success", "near_success", "failure"), None, True)
    b = s.sample(3000, rng)
    counts = np.bincount(b["outcome"], minlength=3)
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.03), counts
    mixed = WindowSampler([sans, rollouts], spec, 32, ("success", "failure"), (0.8, 0.2), True)
    picks = mixed._where[rng.choice(len(mixed._where), size=3000, p=mixed._p)]
    assert abs((picks[:, 0] == 1).mean() - 0.2) < 0.03  # the rollouts store's batch share
    b = mixed.sample(500, rng)
    assert set(np.unique(b["outcome"])) == {0, 2}  # near_success dropped (the ablation switch)


def test_replayed_actions_match_training_windows(stores):
    sans, _, _ = stores
    ds = WindowDataset(sans, WindowSpec(chunk=4), [0])
    acts = np.asarray(sans.step_table(0, ["action"]).column("action").to_pylist(), np.float32)
    chunks = replay_actions(acts, n_chunks=3, K=4)  # past the end of the 10-step episode
    for c in range(3):  # window starts 0, 4, 8 (the last one padded past the episode end)
        assert np.array_equal(chunks[c], ds[4 * c]["actions"])
    assert np.array_equal(chunks[2][0], acts[8])
    assert np.all(chunks[2][1:, :6] == 0) and np.all(chunks[2][1:, 6] == acts[-1, 6])  # hold still


def test_eval_writes_alignment_quality_and_videos(stores, tmp_path):
    sans, _, _ = stores
    assert wvl(["train-wm", *tiny_overrides(stores=f"[{sans.root}]"), f"out={tmp_path / 'wm'}", "train.steps=2"]) == 0
    out = tmp_path / "eval"
    rc = wvl(["eval-wm", f"checkpoint={tmp_path / 'wm'}", f"store={sans.root}", f"classifier_stores=[{sans.root}]",
              "classifier_steps=5", "videos=2", f"out={out}", "threads=1", f"dead_reckoning_store={sans.root}", "dead_reckoning_gain=0.1"])
    assert rc == 0
    res = json.loads((out / "wm_eval.json").read_text())
    for key in ("reward_alignment", "visual_alignment", "psnr", "ssim", "per_outcome", "counts", "classifier_real_accuracy"):
        assert key in res
    assert res["counts"] == {"failure": 2, "near_success": 2, "success": 2} and res["episodes"] == 6
    assert 0.0 <= res["reward_alignment"] <= 1.0 and 0.0 <= res["ssim"] <= 1.0 and res["psnr"] > 0
    assert set(res["per_outcome"]) == {"success", "near_success", "failure"}
    al = res["alignment"]  # per real class, from learning.eval.alignment (its own tests: tests/test_alignment.py)
    assert al["counts"] == res["counts"] and al["real_successes"] == 2 and al["note"] is None
    assert res["reward_balanced_accuracy"] == al["reward"]["balanced_accuracy"] and al["reward"]["overall"] == res["reward_alignment"]
    for o in ("success", "near_success", "failure"):
        assert res["per_outcome"][o]["reward_alignment"] == al["reward"]["per_class"][o]["alignment"]
    assert len(list((out / "videos").glob("*.mp4"))) == 2
    assert (out / "classifier" / "config.json").exists()
    # the reward decision is the env's done rule on the head's probabilities
    for row in res["episodes_detail"]:
        assert row["reward_success"] == (row["reward_max"] > 0.9)
        # the per-frame rewards cover the whole replay; the episode's own frames give its max
        own = row["reward_frames"][:row["length"] - 1]
        assert len(row["reward_frames"]) >= row["length"] - 1 and max(own) == pytest.approx(row["reward_max"], abs=1e-4)
    # the AUC is the share of (real success, real non-success) pairs whose imagined max reward is ranked right
    pos = [r["reward_max"] for r in res["episodes_detail"] if r["real_success"]]
    neg = [r["reward_max"] for r in res["episodes_detail"] if not r["real_success"]]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]
    assert res["reward_auc"] == pytest.approx(sum(pairs) / len(pairs))
    # the state head's error over the horizon, beside dead reckoning's from the same actions
    se = res["state_error"]
    assert se["features"] == ["ee_x", "ee_y", "ee_z", "gripper"] and se["dead_reckoning_gain_m_per_unit"] == 0.1
    for method in ("state_head", "dead_reckoning"):
        e = se[method]
        assert e["position_mm"] >= 0 and 0 <= e["gripper"] <= 1
        assert len(e["position_mm_per_chunk"]) == len(e["gripper_per_chunk"]) == 3  # 9 predicted frames, chunks of 4


def test_state_errors_per_frame_and_per_chunk():
    from learning.eval.world_model import _state_summary, state_errors

    real = np.zeros((5, 4), np.float32)
    pred = real.copy()
    pred[:, 0] = 0.003  # 3 mm off in x
    pred[:, 1] = 0.004  # and 4 mm in y: 5 mm
    pred[4, 3] = 0.5  # the gripper half a stroke off at the last frame
    e = state_errors(pred, real, ["ee_x", "ee_y", "ee_z", "gripper"])
    np.testing.assert_allclose(e["position_mm"], 5.0, rtol=1e-5)
    np.testing.assert_allclose(e["gripper"], [0, 0, 0, 0, 0.5])
    assert set(state_errors(pred[:, 3:], real[:, 3:], ["gripper"])) == {"gripper"}
    summary = _state_summary([e, {"gripper": np.array([1.0, 1.0])}], K=2)
    assert summary["gripper_per_chunk"] == pytest.approx([0.5, 0.0, 0.5])  # chunk 0 has both episodes' frames
    assert summary["position_mm_per_chunk"] == pytest.approx([5.0, 5.0, 5.0])


def test_without_reward_head_the_outcome_comes_from_frames(stores, tmp_path):
    sans, _, _ = stores
    assert wvl(["train-wm", *tiny_overrides(stores=f"[{sans.root}]"), f"out={tmp_path / 'nohead'}", "train.steps=1",
                "model.reward_head=false"]) == 0
    clf = train_success_classifier([sans], steps=5)
    res = evaluate_world_model(tmp_path / "nohead", sans, [0, 1, 2], classifier=clf)
    assert res["reward_alignment"] is None and res["reward_head"] is False
    assert res["reward_auc"] is None
    assert res["reward_balanced_accuracy"] is None and all(v["alignment"] is None for v in res["alignment"]["reward"]["per_class"].values())
    assert 0.0 <= res["visual_alignment"] <= 1.0 and res["episodes"] == 3


def test_train_from_pretrained_cosmos_weights_then_refine(stores, tmp_path):
    """`pretrained=<Cosmos folder>`: world model v0 starts from the folder's transformer and VAE weights (its
    architecture), and a refinement of it checks only the data-shaped fields we set."""
    from tests.world_model.test_model import _save_tiny_cosmos

    sans, rollouts, _ = stores
    tr, _ = _save_tiny_cosmos(tmp_path / "cosmos")
    shaped = ["model.image_size=32", "model.chunk=4", "train.batch_size=2", "train.threads=1", "train.warmup_steps=1"]
    assert wvl(["train-wm", f"stores=[{sans.root}]", f"pretrained={tmp_path / 'cosmos'}", f"out={tmp_path / 'v0'}",
                "train.steps=1", "train.lr=1e-12", *shaped]) == 0
    v0 = load_world_model(tmp_path / "v0")
    assert v0.wm_config.codec == "wan" and v0.wm_config.chunk == 4
    for k, v in tr.state_dict().items():  # lr ~0: the weights are the pretrained ones
        assert torch.allclose(v0.transformer.state_dict()[k], v, atol=1e-6), k
    assert wvl(["train-wm", f"stores=[{sans.root},{rollouts.root}]", f"pretrained={tmp_path / 'cosmos'}", f"init_from={tmp_path / 'v0'}",
                f"out={tmp_path / 'v1'}", "train.steps=1", "train.mix=[0.5,0.5]", *shaped]) == 0
    assert json.loads((tmp_path / "v1" / "train_config.json").read_text())["model"]["codec"] == "wan"


def test_own_frames_condition_windows_on_what_the_model_generates(stores, tmp_path):
    """train.own_frames: a window with a previous window gets as its conditioning frame what the model generates from
    that window's real frame and actions (as imagination does); the first window of an episode keeps its real one,
    and so do the targets. A run with own_frames trains and resumes like any other."""
    from learning.data.windows import WindowDataset, WindowSpec
    from learning.world_model.config import TrainConfig
    from learning.world_model.model import WorldModel
    from learning.world_model.train import condition_on_own_frames

    sans, _, _ = stores
    ds = WindowDataset(sans, WindowSpec(chunk=4, n_cond=1))
    it = ds[5]  # episode 0, t = 5: the previous window starts at t = 1
    assert it["has_prev"] and np.array_equal(it["prev_cond"][0], sans.frames(0)[1])
    assert np.array_equal(it["prev_actions"], np.asarray(sans.step_table(0, ["action"]).column("action").to_pylist(), np.float32)[1:5])
    assert not ds[2]["has_prev"]
    model = WorldModel.from_wm_config(tiny_config()).eval()
    batch = {**ds.batch([2, 5, 6]), "task": ["pick up the red cube"] * 3}
    train = TrainConfig(batch_size=3, own_frames=1.0)
    out = condition_on_own_frames(model, batch, train, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert np.array_equal(out["cond"][0], batch["cond"][0])  # no previous window: the real frame
    assert not np.array_equal(out["cond"][1], batch["cond"][1]) and out["cond"].dtype == np.uint8
    assert np.array_equal(out["frames"], batch["frames"]) and np.array_equal(out["rewards"], batch["rewards"])
    none = condition_on_own_frames(model, batch, TrainConfig(batch_size=3, own_frames=0.0), np.random.default_rng(0), torch.Generator())
    assert np.array_equal(none["cond"], batch["cond"])
    assert wvl(["train-wm", *tiny_overrides(stores=f"[{sans.root}]"), f"out={tmp_path / 'own'}", "train.steps=3", "train.own_frames=0.5"]) == 0
    assert json.loads((tmp_path / "own" / "train_config.json").read_text())["train"]["own_frames"] == 0.5
