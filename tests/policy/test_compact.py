"""The compact VLA against the policy interface GRPO relies on: exact log-probs, greedy limit, save/load."""

import math

import numpy as np
import pytest
import torch

from learning.policy import InstructionError, PolicyInputError, VLAPolicy, load_policy
from tests.policy.conftest import INSTRUCTION, OTHER, tiny_compact


@pytest.mark.parametrize("temperature", [1.0, 1.6])
def test_sampled_log_prob_equals_recomputed_log_prob(policy, images, temperature):
    g = torch.Generator().manual_seed(0)
    chunks, tokens, log_prob = policy.sample(images, INSTRUCTION, temperature, generator=g)
    assert chunks.shape == (4, 8, 7) and chunks.dtype == torch.float32
    assert tokens.shape == (4, 56) and tokens.dtype == torch.int64
    assert log_prob.shape == (4,) and log_prob.dtype == torch.float32
    recomputed = policy.log_prob(images, INSTRUCTION, tokens, temperature=temperature)
    assert torch.allclose(log_prob, recomputed, atol=1e-5, rtol=0)
    per_token = policy.token_log_probs(images, INSTRUCTION, tokens, temperature=temperature)
    assert per_token.shape == (4, 56) and torch.allclose(per_token.sum(-1), recomputed)
    assert torch.equal(chunks, policy.tokens_to_actions(tokens))


def test_temperature_to_zero_equals_act(policy, images):
    greedy = policy.act(images, INSTRUCTION)
    cold = policy.sample(images, INSTRUCTION, temperature=1e-6, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(cold, greedy)
    chunks, tokens, log_prob = policy.sample(images, INSTRUCTION, temperature=0.0)
    assert torch.equal(chunks, greedy) and torch.all(log_prob == 0)
    assert torch.equal(policy.actions_to_tokens(greedy), tokens)


def test_sampling_is_seeded_and_temperature_spreads_the_draws(policy, images):
    a = policy.sample(images, INSTRUCTION, 1.0, generator=torch.Generator().manual_seed(3))[1]
    b = policy.sample(images, INSTRUCTION, 1.0, generator=torch.Generator().manual_seed(3))[1]
    assert torch.equal(a, b)
    hot = policy.sample(images, INSTRUCTION, 5.0, generator=torch.Generator().manual_seed(3))[1]
    greedy = policy.actions_to_tokens(policy.act(images, INSTRUCTION))
    assert (hot != greedy).float().mean() > 0.5  # an untrained 256-way categorical at T=5 is close to uniform


def test_log_probs_carry_gradients_and_entropy_is_bounded(policy, images):
    tokens = policy.sample(images, INSTRUCTION, 1.0)[1]
    lp = policy.token_log_probs(images, INSTRUCTION, tokens)
    assert lp.requires_grad and torch.all(lp <= 0)
    (-lp.mean()).backward()
    assert policy.head.weight.grad is not None and policy.head.weight.grad.abs().sum() > 0
    ent = policy.entropy(images, INSTRUCTION)
    assert ent.shape == (4, 56) and torch.all(ent >= 0) and torch.all(ent <= math.log(256) + 1e-4)


def test_instruction_padding_does_not_change_a_row(policy, images):
    """Mixed instruction lengths pad the shorter one; padding is masked, so each row equals its own batch."""
    mixed = policy.logits(torch.from_numpy(images[:2]), policy.encode_instructions([INSTRUCTION, OTHER]))
    alone = policy.logits(torch.from_numpy(images[:1]), policy.encode_instructions([INSTRUCTION]))
    assert torch.allclose(mixed[0], alone[0], atol=1e-5)


def test_action_token_round_trip(policy):
    a = np.random.default_rng(0).uniform(-1, 1, (3, 8, 7)).astype(np.float32)
    tok = policy.actions_to_tokens(a)
    assert tok.shape == (3, 56)
    assert np.abs(policy.tokens_to_actions(tok).numpy() - a).max() <= 1 / 255 + 1e-6
    # step-major: token k * 7 + d is action k, dimension d
    assert int(tok[0, 7 * 2 + 6]) == int(np.rint((a[0, 2, 6] + 1) / 2 * 255))


def test_save_and_load_round_trip(policy, images, tmp_path):
    policy.save_pretrained(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert isinstance(loaded, VLAPolicy) and not loaded.training
    assert torch.equal(loaded.act(images, INSTRUCTION), policy.act(images, INSTRUCTION))
    assert loaded.config.instructions == [INSTRUCTION, OTHER] and loaded.default_instruction == INSTRUCTION
    assert loaded.config.image_mean == [0.4, 0.4, 0.4]  # normalisation stats travel with the weights


def test_bad_inputs_are_refused_with_the_field_named(policy, images):
    with pytest.raises(PolicyInputError, match=r"images: expected shape \(B, 16, 16, 3\)"):
        policy.act(np.zeros((1, 32, 32, 3), np.uint8), INSTRUCTION)
    with pytest.raises(PolicyInputError, match="uint8"):
        policy.act(images.astype(np.float32), INSTRUCTION)
    with pytest.raises(InstructionError, match="blue"):
        policy.act(images, "pick up the blue cube")
    with pytest.raises(PolicyInputError, match="instructions: 2 given for a batch of 4"):
        policy.act(images, [INSTRUCTION, OTHER])
    with pytest.raises(PolicyInputError, match="tokens: values must be in"):
        policy.token_log_probs(images, INSTRUCTION, np.full((4, 56), 256))
    with pytest.raises(PolicyInputError, match="temperature"):
        policy.token_log_probs(images, INSTRUCTION, np.zeros((4, 56), np.int64), temperature=0.0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy("/nonexistent/policy")


def test_single_frame_counts_as_a_batch_of_one(policy, images):
    assert torch.equal(policy.act(images[0], INSTRUCTION), policy.act(images[:1], INSTRUCTION))


def test_image_size_must_match_the_conv_stem():
    with pytest.raises(ValueError, match="image_size"):
        tiny_compact(image_size=18)


def test_gaussian_head_is_an_exact_ordinal_categorical(images, tmp_path):
    """action_head="gaussian": same interface and exactness; greedy = the bin nearest mu, clamped to the ends."""
    policy = tiny_compact(action_head="gaussian")
    chunks, tokens, log_prob = policy.sample(images, INSTRUCTION, 1.6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(log_prob, policy.log_prob(images, INSTRUCTION, tokens, temperature=1.6), atol=1e-5, rtol=0)
    # (An untrained Gaussian is wide: neighbouring bins at its peak differ by ~1e-5 in logit, hence the colder T.)
    cold = policy.sample(images, INSTRUCTION, 1e-9, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(cold, policy.act(images, INSTRUCTION))
    with torch.no_grad():
        out = policy.head(torch.zeros(1, policy.config.d_model))
    assert out.shape == (1, 7 * 2)  # (mu, log sigma) per action dimension, not 256 logits
    policy.save_pretrained(tmp_path / "g")
    assert torch.equal(load_policy(tmp_path / "g").act(images, INSTRUCTION), policy.act(images, INSTRUCTION))
    with pytest.raises(ValueError, match="action_head"):
        tiny_compact(action_head="mixture")


def test_fused_token_is_in_the_graph_and_survives_save_load(images, tmp_path):
    """fused_token: one extra token from an MLP over [state, keypoint coordinates]."""
    features = ["ee_x", "ee_y", "ee_z", "gripper"]
    policy = tiny_compact(fused_token=True, state_features=features, state_mean=[0.0] * 4, state_std=[0.1] * 4)
    assert policy.fused_proj[0].in_features == 4 + 2 * policy.config.keypoints
    with torch.no_grad():  # an untrained MLP is quiet; make it loud enough to move the argmax
        policy.fused_proj[-1].weight.mul_(200.0)
    states = np.full((4, 4), 0.05, np.float32)
    base = policy.act(images, INSTRUCTION, states=states)
    policy.save_pretrained(tmp_path / "f")
    assert torch.equal(load_policy(tmp_path / "f").act(images, INSTRUCTION, states=states), base)
    with torch.no_grad():
        policy.fused_proj[-1].weight.zero_()
        policy.fused_proj[-1].bias.zero_()
    assert not torch.equal(base, policy.act(images, INSTRUCTION, states=states))
    with pytest.raises(ValueError, match="fused_token"):
        tiny_compact(fused_token=True, keypoints=0)


def test_without_patch_tokens_the_image_enters_only_through_the_keypoints(images, tmp_path):
    """patch_tokens=False: no conv past the keypoints' level and no patch projection; the output depends on the
    image only through the keypoints' coordinates, so an image that moves no keypoint changes no action."""
    policy = tiny_compact(patch_tokens=False, keypoint_level=0)
    names = {n for n, _ in policy.named_parameters()}
    assert not any(n.startswith(("patch_proj", "image_pos", "stages")) for n in names)
    logits = policy.logits(torch.from_numpy(images), policy.encode_instructions([INSTRUCTION] * 4))
    assert logits.shape == (4, 8 * 7, 256)
    with torch.no_grad():  # keypoint filters that ignore the colours: every keypoint sits at the centroid
        policy.kp_conv.weight[:, :3].zero_()
    other = np.random.default_rng(1).integers(0, 256, images.shape, dtype=np.uint8)
    assert torch.equal(policy.act(images, INSTRUCTION), policy.act(other, INSTRUCTION))
    policy.save_pretrained(tmp_path / "p")
    assert load_policy(tmp_path / "p").config.patch_tokens is False
    with pytest.raises(ValueError, match="patch_tokens"):
        tiny_compact(patch_tokens=False, keypoints=0)


def test_mlp_trunk_reads_state_keypoints_and_instruction(images, tmp_path):
    """trunk=mlp: no transformer, no tokens; every input still reaches the actions, and save/load round-trips."""
    features = ["ee_x", "ee_y", "ee_z", "gripper"]
    policy = tiny_compact(trunk="mlp", patch_tokens=False, keypoint_level=0, state_features=features,
                          state_mean=[0.0] * 4, state_std=[0.1] * 4)
    names = {n.split(".")[0] for n, _ in policy.named_parameters()}
    assert not names & {"blocks", "queries", "kp_proj", "state_proj", "text_pos", "patch_proj"}
    with torch.no_grad():  # an untrained MLP is quiet; make it loud enough to move the argmax
        policy.head.weight.mul_(50.0)
    states = np.full((4, 4), 0.05, np.float32)
    base = policy.act(images, INSTRUCTION, states=states)
    assert not torch.equal(base, policy.act(images, INSTRUCTION, states=-states))
    assert not torch.equal(base, policy.act(images, OTHER, states=states))
    policy.save_pretrained(tmp_path / "m")
    assert torch.equal(load_policy(tmp_path / "m").act(images, INSTRUCTION, states=states), base)
    for bad in ({"patch_tokens": True}, {"patch_tokens": False, "keypoints": 0}, {"patch_tokens": False, "fused_token": True}):
        with pytest.raises(ValueError, match="trunk|fused_token|patch_tokens"):
            tiny_compact(trunk="mlp", **bad)
    with pytest.raises(ValueError, match="trunk"):
        tiny_compact(trunk="rnn")


@pytest.mark.parametrize("trunk", ["mlp", "transformer"])
def test_aux_features_feed_the_actions_with_the_gradient_stopped(images, trunk):
    """aux_features: the aux head's predictions are inputs of the actions (so a changed aux head changes the
    chunk), but the action loss does not train the aux head (its gradient is stopped there)."""
    kw = dict(trunk="mlp", fused_token=False) if trunk == "mlp" else dict(fused_token=True)
    policy = tiny_compact(patch_tokens=False, keypoint_level=0, aux_dim=10, aux_features=True, **kw)
    words = policy.encode_instructions([INSTRUCTION] * 4)
    logits, aux = policy.logits_and_aux(torch.from_numpy(images), words)
    assert aux.shape == (4, 10)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in policy.aux_head.parameters())
    with torch.no_grad():
        base = policy.logits(torch.from_numpy(images), words)
        policy.aux_head[-1].bias.add_(5.0)
        assert not torch.allclose(base, policy.logits(torch.from_numpy(images), words))
    with pytest.raises(ValueError, match="aux_features"):
        tiny_compact(aux_features=True)  # no aux head
    with pytest.raises(ValueError, match="aux_features"):
        tiny_compact(aux_dim=10, aux_features=True, fused_token=False)  # the transformer reads them via the fused token


def test_mlp_trunk_without_keypoints_reads_state_and_aux_predictions(images):
    """trunk_keypoints=false: the mlp trunk sees [state, aux predictions, instruction] only (a perception head and a
    controller); the image still reaches the actions, through the aux head."""
    policy = tiny_compact(trunk="mlp", patch_tokens=False, fused_token=False, keypoint_level=0, aux_dim=10,
                          aux_features=True, trunk_keypoints=False)
    assert policy.mlp_trunk[0].in_features == 10 + policy.config.d_model
    with torch.no_grad():
        policy.head.weight.mul_(50.0)
        policy.aux_head[-1].weight.mul_(50.0)
    other = np.random.default_rng(3).integers(0, 256, images.shape, dtype=np.uint8)
    assert not torch.equal(policy.act(images, INSTRUCTION), policy.act(other, INSTRUCTION))
    with pytest.raises(ValueError, match="trunk_keypoints"):
        tiny_compact(trunk_keypoints=False)
