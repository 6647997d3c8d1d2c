"""The Hugging Face VLM adapter on a tiny random-initialised Llava (CLIP vision + Llama text) built here:
action bins on the last 256 vocabulary ids, autoregressive decoding, the same interface as the compact VLA."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from learning.policy import load_policy  # noqa: E402
from learning.policy.hf_vla import ADAPTER_FILE, HFVLA, reserved_action_tokens  # noqa: E402
from learning.policy.sft import SFTConfig, sft_loss, train_sft  # noqa: E402

INSTRUCTION = "pick up the red cube"
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "in", ":", "what", "action", "should", "the", "robot", "take", "to",
         "?", "out", "pick", "up", "red", "cube"]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A local folder with a tiny Llava model + processor, as `save_pretrained` writes a real one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                              PreTrainedTokenizerFast)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab = {w: i for i, w in enumerate(WORDS + reserved_action_tokens(256))}  # the bins are the last 256 ids
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=False)
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1, image_seq_length=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vlm") / "tiny-llava"
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vla(tiny_vlm) -> HFVLA:
    return HFVLA.from_pretrained(tiny_vlm, instructions=[INSTRUCTION]).eval()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)


def test_action_bins_are_the_last_256_vocabulary_tokens(vla):
    ids = vla.action_ids.tolist()
    assert ids == list(range(len(WORDS), len(WORDS) + 256))
    assert vla.processor.tokenizer.convert_ids_to_tokens(ids[0]) == "<act_0>"


def test_sampled_log_prob_equals_recomputed(vla, images):
    chunks, tokens, log_prob = vla.sample(images, INSTRUCTION, temperature=1.6, generator=torch.Generator().manual_seed(0))
    assert chunks.shape == (3, 8, 7) and tokens.shape == (3, 56) and log_prob.shape == (3,)
    assert tokens.min() >= 0 and tokens.max() < 256
    recomputed = vla.log_prob(images, INSTRUCTION, tokens, temperature=1.6)
    assert torch.allclose(log_prob, recomputed, atol=1e-5, rtol=0)
    assert torch.equal(chunks, vla.tokens_to_actions(tokens))


def test_temperature_to_zero_equals_act(vla, images):
    greedy = vla.act(images, INSTRUCTION)
    cold = vla.sample(images, INSTRUCTION, temperature=1e-6, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(greedy, cold)
    assert torch.all(vla.sample(images, INSTRUCTION, temperature=0.0)[2] == 0)


def test_left_padding_leaves_each_row_unchanged(vla, images):
    tokens = vla.sample(images[:2], INSTRUCTION, 1.0, generator=torch.Generator().manual_seed(2))[1]
    mixed = vla.token_log_probs(images[:2], [INSTRUCTION, "pick up the cube"], tokens)
    alone = vla.token_log_probs(images[1:2], ["pick up the cube"], tokens[1:2])
    assert torch.allclose(mixed[1], alone[0], atol=1e-5)
    ent = vla.entropy(images[:1], INSTRUCTION, tokens[:1])
    assert ent.shape == (1, 56) and torch.all(ent >= 0)


def test_one_sft_step_trains_the_adapter_and_it_saves_and_loads(tiny_vlm, images, tmp_path):
    vla = HFVLA.from_pretrained(tiny_vlm, instructions=[INSTRUCTION]).train()
    chunks = np.random.default_rng(1).uniform(-1, 1, (3, 8, 7)).astype(np.float32)
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-3)
    head_before = vla.model.get_output_embeddings().weight.detach().clone()
    loss, _ = sft_loss(vla, images, [INSTRUCTION] * 3, chunks)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert np.isfinite(loss.item()) and not torch.equal(head_before, vla.model.get_output_embeddings().weight)
    vla.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / ADAPTER_FILE).exists()
    loaded = load_policy(tmp_path / "saved")
    assert isinstance(loaded, HFVLA) and loaded.default_instruction == INSTRUCTION
    vla.eval()
    assert torch.equal(loaded.act(images, INSTRUCTION), vla.act(images, INSTRUCTION))


def test_train_sft_runs_the_adapter_through_the_same_loop(tiny_vlm, tiny_store, tmp_path):
    cfg = SFTConfig.from_dict(dict(store=str(tiny_store.root), out=str(tmp_path / "hf-run"), policy="hf",
                                   hf={"path": str(tiny_vlm)}, steps=1, batch_size=2, max_episodes=2, val_episodes=0,
                                   warmup_steps=1, threads=1))
    final = train_sft(cfg, tiny_store)
    assert isinstance(load_policy(final), HFVLA)


def test_bad_adapter_settings_are_refused(tiny_vlm):
    with pytest.raises(ValueError, match="action_token_ids"):
        HFVLA.from_pretrained(tiny_vlm, action_token_ids=list(range(0, 256)))  # includes pad/bos/eos/image
    with pytest.raises(ValueError, match="prompt"):
        HFVLA.from_pretrained(tiny_vlm, prompt="no placeholder")
    with pytest.raises(FileNotFoundError, match="hf.path"):
        HFVLA.from_pretrained(tiny_vlm.parent / "missing")
