"""The world model itself (tiny configs of the real diffusers classes): save/load, the Cosmos from_pretrained path,
learning (overfit one window, a separable reward, action dependence), and bad input."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, CosmosTransformer3DModel
from diffusers.models.transformers import transformer_cosmos

from learning.world_model.config import TrainConfig
from learning.world_model.flow import flow_target, noisy_latents
from learning.world_model.model import CheckpointMismatchError, WorldModel, load_world_model
from learning.world_model.train import training_step
from tests.factories import random_episode
from tests.world_model.conftest import TINY_TEST_TRANSFORMER, tiny_config


def _inputs(model: WorldModel, B: int = 2, seed: int = 0):
    cfg = model.wm_config
    g = torch.Generator().manual_seed(seed)
    S = cfg.image_size
    cond = torch.randint(0, 256, (B, cfg.n_cond, S, S, 3), generator=g, dtype=torch.uint8)
    nxt = torch.randint(0, 256, (B, cfg.chunk, S, S, 3), generator=g, dtype=torch.uint8)
    c, x0 = model.encode_window(cond, nxt)
    actions = torch.rand(B, cfg.chunk, cfg.action_dim, generator=g) * 2 - 1
    return c, x0, actions, model.tokenize(["pick up the red cube"] * B)


def test_patch_codec_is_lossless_and_shapes_follow_the_config():
    torch.manual_seed(0)
    model = WorldModel.from_wm_config(tiny_config())
    S = 32
    cond = torch.randint(0, 256, (2, 1, S, S, 3), dtype=torch.uint8)
    nxt = torch.randint(0, 256, (2, 4, S, S, 3), dtype=torch.uint8)
    c, x0 = model.encode_window(cond, nxt)
    assert c.shape == (2, 96, 1, 8, 8) and x0.shape == (2, 96, 2, 8, 8)  # 2 frames x 3 x 4 x 4 channels per latent frame
    assert torch.equal(model.decode_next(c, x0), nxt)


def test_save_pretrained_round_trip_and_other_config_refused(tmp_path):
    torch.manual_seed(0)
    model = WorldModel.from_wm_config(tiny_config()).eval()
    model.save_pretrained(tmp_path / "wm")
    back = load_world_model(tmp_path / "wm", expect=tiny_config())
    c, x0, a, ids = _inputs(model)
    t = torch.full((2,), 0.4)
    with torch.no_grad():
        o1, o2 = model(x0, t, c, a, ids), back(x0, t, c, a, ids)
    assert torch.equal(o1.velocity, o2.velocity) and torch.equal(o1.reward_logits, o2.reward_logits)
    with pytest.raises(CheckpointMismatchError, match=r"chunk: 4 != 8.*reward_hidden: 32 != 64"):
        load_world_model(tmp_path / "wm", expect=tiny_config(chunk=8, reward_hidden=64))
    with pytest.raises(FileNotFoundError, match="not a world-model checkpoint"):
        load_world_model(tmp_path)


def _save_tiny_cosmos(folder):
    """A tiny random Cosmos-Predict2 Video2World folder: transformer/ (real checkpoint layout: 16 latent channels
    + condition mask, concat_padding_mask=True) and vae/ (a tiny AutoencoderKLWan), both via save_pretrained."""
    torch.manual_seed(0)
    tr = CosmosTransformer3DModel(in_channels=17, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                                  text_embed_dim=16, adaln_lora_dim=16, max_size=(8, 16, 16), patch_size=(1, 2, 2),
                                  rope_scale=(1.0, 3.0, 3.0), concat_padding_mask=True, extra_pos_embed_type=None)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
    tr.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    return tr, vae


def test_from_cosmos_loads_pretrained_transformer_and_vae_and_round_trips(tmp_path):
    tr, vae = _save_tiny_cosmos(tmp_path / "cosmos")
    model = WorldModel.from_cosmos(tmp_path / "cosmos", image_size=32, chunk=8, t_cond=1e-4).eval()
    cfg = model.wm_config
    assert cfg.codec == "wan" and cfg.temporal_factor == 4 and cfg.timestep_scale == 1.0
    # The pretrained weights arrive unchanged (the model keeps diffusers' modules and parameter names).
    mine = model.transformer.state_dict()
    for k, v in tr.state_dict().items():
        assert torch.equal(mine[k], v), k
    for k, v in vae.state_dict().items():
        assert torch.equal(model.latent_codec.vae.state_dict()[k], v), k
    # concat_padding_mask=True runs without torchvision (diffusers' forward, which needs it, is not called).
    S = 32
    cond = torch.randint(0, 256, (2, 1, S, S, 3), dtype=torch.uint8)
    c, _ = model.encode_window(cond)
    assert c.shape == (2, 16, 1, 4, 4)
    a = torch.rand(2, 8, 7) * 2 - 1
    ids = model.tokenize(["pick"] * 2)
    noise = torch.randn(model.noise_shape(2), generator=torch.Generator().manual_seed(0))
    lat, probs, _ = model.generate(c, a, ids, noise, num_inference_steps=2)
    frames = model.decode_next(c, lat)
    assert lat.shape == (2, 16, 2, 4, 4) and probs.shape == (2, 8) and frames.shape == (2, 8, S, S, 3)
    # A fresh action MLP ends in zeros: at step 0 the pretrained denoiser is unchanged by actions.
    with torch.no_grad():
        v1 = model(lat, torch.full((2,), 0.5), c, a, ids).velocity
        v2 = model(lat, torch.full((2,), 0.5), c, -a, ids).velocity
    assert torch.equal(v1, v2)
    model.save_pretrained(tmp_path / "wm")
    saved = json.loads((tmp_path / "wm" / "config.json").read_text())
    assert saved["codec"] == "wan" and saved["transformer_kwargs"]["concat_padding_mask"] is True
    back = load_world_model(tmp_path / "wm", expect=cfg)
    lat2, probs2, _ = back.generate(c, a, ids, noise, num_inference_steps=2)
    assert torch.allclose(lat, lat2) and torch.allclose(probs, probs2)


def test_from_cosmos_without_a_cosmos_folder_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="transformer"):
        WorldModel.from_cosmos(tmp_path)


def test_bad_input_is_refused_with_the_mismatch_named():
    model = WorldModel.from_wm_config(tiny_config())
    with pytest.raises(ValueError, match=r"\(B, T, 32, 32, 3\) uint8.*\(1, 1, 64, 64, 3\)"):
        model.encode_window(torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="window of 2 frames, the model predicts chunks of 4"):
        model.encode_window(torch.zeros(1, 1, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8))
    c, x0, a, ids = _inputs(model)
    with pytest.raises(ValueError, match=r"actions: expected \(B, 4, 7\)"):
        model(x0, torch.rand(2), c, a[:, :2], ids)
    with pytest.raises(ValueError, match="patch_frames|chunk"):
        tiny_config(chunk=3)
    with pytest.raises(ValueError, match="codec"):
        tiny_config(codec="vqgan")
    with pytest.raises(ValueError, match="transformer_kwargs.in_channels"):
        tiny_config(transformer_kwargs={**TINY_TEST_TRANSFORMER, "in_channels": 3})


def _fixed_loss(model, c, x0, a, ids, seeds=range(6)) -> float:
    """Flow loss on fixed (t, noise) draws with t in [0.5, 1] (the training loss itself is noisy, and at small t
    no model can tell the noise from the frame)."""
    losses = []
    with torch.no_grad():
        for s in seeds:
            g = torch.Generator().manual_seed(100 + s)
            t = 0.5 + 0.5 * torch.rand(x0.shape[0], generator=g)
            eps = torch.randn(x0.shape, generator=g)
            v = model(noisy_latents(x0, eps, t), t, c, a, ids).velocity
            losses.append(torch.mean((v - flow_target(x0, eps)) ** 2).item())
    return float(np.mean(losses))


def _fit(model, lat, steps, lr=3e-3, reward_weight=1.0):
    train = TrainConfig(reward_weight=reward_weight)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        loss, _ = training_step(model, lat, train, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_tiny_model_overfits_one_window():
    torch.manual_seed(0)
    model = WorldModel.from_wm_config(tiny_config())
    ep = random_episode(T=5, H=32, W=32)
    frames = torch.from_numpy(ep.images["front"])[None]  # (1, 5, 32, 32, 3)
    c, x0 = model.encode_window(frames[:, :1], frames[:, 1:])
    a, ids = torch.from_numpy(ep.actions[:4])[None], model.tokenize([ep.task])
    lat = {"cond": c, "x0": x0, "actions": a, "rewards": torch.zeros(1, 4), "text_ids": ids}
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))

    def sample_error() -> float:  # grey levels between the sampled chunk and the real one
        lat_g, _, _ = model.generate(c, a, ids, noise, num_inference_steps=4)
        return float(np.abs(model.decode_next(c, lat_g).numpy().astype(float) - ep.images["front"][1:]).mean())

    before, err_before = _fixed_loss(model, c, x0, a, ids), sample_error()
    _fit(model, lat, steps=200)
    after, err_after = _fixed_loss(model, c, x0, a, ids), sample_error()
    assert after < 0.1 * before, (before, after)
    assert err_after < 0.5 * err_before, (err_before, err_after)


def test_state_head_learns_the_state_change_on_a_tiny_overfit():
    """The joint loss trains the state head: on a few windows whose TCP moves as their actions say (0.1 m per unit
    per step, the simulated rig's scale) and whose gripper closes on a closing command, its loss falls by 10x and
    its mean TCP error by 3x."""
    from learning.world_model.model import state_units

    torch.manual_seed(0)
    model = WorldModel.from_wm_config(tiny_config())
    B, K = 6, 4
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (B, 1 + K, 32, 32, 3), dtype=np.uint8)
    actions = np.zeros((B, K, 7), np.float32)
    actions[:, :, :3] = rng.uniform(-0.3, 0.3, (B, 1, 3))  # a constant push per window
    actions[:, :, 6] = np.where(np.arange(B) % 2 == 0, 1.0, -1.0)[:, None]
    s0 = np.concatenate([rng.uniform(-0.05, 0.05, (B, 3)), np.ones((B, 1))], 1).astype(np.float32)
    states = s0[:, None].repeat(K, 1)
    states[:, :, :3] += 0.1 * np.cumsum(actions[:, :, :3], 1)
    states[:, :, 3] = np.where(actions[:, :, 6] > 0, 1.0, 0.5)
    c, x0 = model.encode_window(torch.from_numpy(frames[:, :1]), torch.from_numpy(frames[:, 1:]))
    target = torch.from_numpy(states - s0[:, None]) * state_units(model.wm_config.state_features)
    lat = {"cond": c, "x0": x0, "actions": torch.from_numpy(actions), "rewards": torch.zeros(B, K),
           "text_ids": model.tokenize(["t"] * B), "state_delta": target}

    def state_error() -> tuple[float, float]:  # (the state loss, the mean TCP error in mm) at the last Euler step
        with torch.no_grad():
            _, _, delta = model.generate(c, lat["actions"], lat["text_ids"], torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)))
        pred = delta.numpy() * state_units(model.wm_config.state_features).numpy()
        return float(np.mean((pred - target.numpy()) ** 2)), float(1000 * np.linalg.norm((delta.numpy() + s0[:, None] - states)[..., :3], axis=-1).mean())

    (before, mm_before), _ = state_error(), _fit(model, lat, steps=300)
    after, mm_after = state_error()
    assert after < 0.1 * before, (before, after)
    assert mm_after < mm_before / 3, (mm_before, mm_after)


def test_reward_head_learns_a_trivially_separable_set():
    torch.manual_seed(0)
    model = WorldModel.from_wm_config(tiny_config())
    B, S = 8, 32
    bright = np.arange(B) % 2 == 0  # success windows: bright frames; others dark
    frames = np.where(bright[:, None, None, None, None], 220, 20).astype(np.uint8) * np.ones((B, 5, S, S, 3), np.uint8)
    c, x0 = model.encode_window(torch.from_numpy(frames[:, :1]), torch.from_numpy(frames[:, 1:]))
    rewards = torch.from_numpy(np.repeat(bright[:, None], 4, 1).astype(np.float32))
    lat = {"cond": c, "x0": x0, "actions": torch.zeros(B, 4, 7), "rewards": rewards, "text_ids": model.tokenize(["t"] * B)}
    _fit(model, lat, steps=80, reward_weight=5.0)
    with torch.no_grad():
        p = torch.sigmoid(model(x0, torch.zeros(B), c, lat["actions"], lat["text_ids"]).reward_logits)
    assert bool((p[bright] > 0.9).all()) and bool((p[~bright] < 0.1).all()), p


@pytest.mark.parametrize("cosmos_layout", [False, True])
def test_transformer_pass_is_diffusers_forward_plus_the_action_term(tmp_path, monkeypatch, cosmos_layout):
    """`WorldModel.transformer_pass` writes diffusers' Cosmos forward out: with no action it returns exactly what
    diffusers' forward returns, and the last block's output as its hidden states (a diffusers upgrade that changes
    the forward fails here). The Cosmos layout has concat_padding_mask=True, whose diffusers path calls torchvision's
    resize: a nearest-neighbour stand-in for the comparison (the padding mask is all zeros)."""
    if cosmos_layout:
        _save_tiny_cosmos(tmp_path / "cosmos")
        model = WorldModel.from_cosmos(tmp_path / "cosmos", image_size=32, chunk=8).eval()
        resize = lambda x, size, interpolation=None: torch.nn.functional.interpolate(x, size=tuple(size), mode="nearest")  # noqa: E731
        monkeypatch.setattr(transformer_cosmos, "transforms", SimpleNamespace(functional=SimpleNamespace(resize=resize),
                                                                              InterpolationMode=SimpleNamespace(NEAREST=None)), raising=False)
    else:
        torch.manual_seed(0)
        model = WorldModel.from_wm_config(tiny_config()).eval()
    with torch.no_grad():  # parameters that start at zero (e.g. the learnable position embedding) get values, so each input counts
        for p in model.transformer.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)
    c, x0, _, ids = _inputs(model)
    x = torch.cat([c, torch.randn_like(x0)], 2)
    B, _, T, h, w = x.shape
    timestep = torch.rand(B, T)
    cond_mask = torch.zeros(B, 1, T, h, w)
    cond_mask[:, :, : c.shape[2]] = 1.0
    text = model.text_encoder(ids)
    seen = []

    def keep(module, args, out):  # returns None: the block's output stays as it is
        seen.append(out)

    model.transformer.transformer_blocks[-1].register_forward_hook(keep)
    with torch.no_grad():
        theirs = model.transformer(hidden_states=x, timestep=timestep.view(B, 1, T, 1, 1), encoder_hidden_states=text,
                                   fps=model.wm_config.rope_fps, condition_mask=cond_mask,
                                   padding_mask=x.new_zeros(1, 1, h, w), return_dict=False)[0]
        ours, hidden = model.transformer_pass(x, timestep, torch.zeros(B, T, 4 * model.wm_config.hidden_size), text, cond_mask)
        moved, _ = model.transformer_pass(x, timestep, torch.full((B, T, 4 * model.wm_config.hidden_size), 0.1), text, cond_mask)
    assert torch.equal(ours, theirs) and torch.equal(hidden, seen[0])
    assert not torch.allclose(moved, ours)  # the action term reaches the prediction


def test_actions_change_the_prediction():
    """Trained on windows where the z action makes the scene brighter (+1) or darker (-1) frame by frame, the model
    draws the commanded direction: two chunks from the same frame with the same noise give clearly different
    frames, each the right way."""
    torch.manual_seed(0)
    model = WorldModel.from_wm_config(tiny_config())
    B, K, S = 8, 4, 32
    rng = np.random.default_rng(0)
    sign = np.where(np.arange(B) % 2 == 0, 1.0, -1.0)
    levels = rng.integers(100, 150, B)[:, None] + 20 * sign[:, None] * np.arange(K + 1)  # (B, K+1) grey levels
    frames = np.broadcast_to(levels[:, :, None, None, None], (B, K + 1, S, S, 3)).astype(np.uint8).copy()
    frames[:, :, 12:20, 12:20] = (230, 60, 60)  # a red square that stays put
    actions = np.zeros((B, K, 7), np.float32)
    actions[:, :, 2] = sign[:, None]
    c, x0 = model.encode_window(torch.from_numpy(frames[:, :1]), torch.from_numpy(frames[:, 1:]))
    lat = {"cond": c, "x0": x0, "actions": torch.from_numpy(actions), "rewards": torch.zeros(B, K), "text_ids": model.tokenize(["t"] * B)}
    _fit(model, lat, steps=150)
    c0, _ = model.encode_window(torch.from_numpy(frames[:1, :1]).expand(2, -1, -1, -1, -1))  # the same start frame twice
    chunk = torch.zeros(2, K, 7)
    chunk[0, :, 2], chunk[1, :, 2] = 1.0, -1.0
    noise = torch.randn(model.noise_shape(1), generator=torch.Generator().manual_seed(3)).expand(2, -1, -1, -1, -1)
    lat_out, _, _ = model.generate(c0, chunk, model.tokenize(["t"] * 2), noise, num_inference_steps=4)
    out = model.decode_next(c0, lat_out).numpy().astype(float)  # (2, K, S, S, 3)
    assert np.abs(out[0] - out[1]).mean() > 40.0  # grey levels: clearly different videos
    start = float(frames[0, 0, 0, 0, 0])
    background = out[:, -1, :8].mean((1, 2, 3))  # last frame, top rows (no square)
    assert background[0] > start + 40 and background[1] < start - 40, (start, background)


def test_cumulative_actions_give_each_frame_the_translation_commanded_so_far(tmp_path):
    """model.action_cumulative: the action MLP of latent frame j also reads the running sum of the chunk's xyz
    commands up to each of its steps, so the same last action after different earlier ones embeds differently;
    the flag round-trips through save_pretrained."""
    from learning.world_model.model import ActionEmbedding, load_world_model

    torch.manual_seed(0)
    emb = ActionEmbedding(7, 2, 16, 8, cumulative=True)
    a = torch.zeros(2, 4, 7)
    a[0, 0, 0], a[1, 0, 0] = 1.0, -1.0  # differ only in the first step's x
    out = emb(a)
    assert out.shape == (2, 2, 8) and not torch.allclose(out[0, 1], out[1, 1])  # frame 1's own actions are equal
    plain = ActionEmbedding(7, 2, 16, 8)
    assert torch.allclose(plain(a)[0, 1], plain(a)[1, 1])  # without the sums frame 1 cannot tell them apart
    model = WorldModel.from_wm_config(tiny_config(action_cumulative=True))
    model.save_pretrained(tmp_path / "m")
    assert load_world_model(tmp_path / "m", expect=tiny_config(action_cumulative=True)).wm_config.action_cumulative
