import numpy as np
import pytest

from learning.policy.tokenizers import ActionTokenizer, InstructionError, WordTokenizer


def test_action_bins_round_trip_within_half_a_bin():
    at = ActionTokenizer(256)
    a = np.random.default_rng(0).uniform(-1, 1, (100, 7))
    tok = at.encode(a)
    assert tok.dtype == np.int64 and tok.min() >= 0 and tok.max() <= 255
    assert np.abs(at.decode(tok) - a).max() <= at.bin_width / 2 + 1e-7
    assert np.array_equal(at.encode(at.decode(tok)), tok)


def test_action_bins_represent_the_gripper_ends_exactly_and_clip():
    at = ActionTokenizer(256)
    assert at.encode(np.array([-1.0, 1.0, -3.0, 7.0])).tolist() == [0, 255, 0, 255]
    assert at.decode(np.array([0, 255])).tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="tokens"):
        at.decode(np.array([256]))
    with pytest.raises(ValueError, match="n_bins"):
        ActionTokenizer(1)


def test_word_tokenizer_encodes_known_words_and_pads_batches():
    tok = WordTokenizer.build(["Pick up the red cube.", "put the cube down"])
    assert tok.vocab[0] == "<pad>"
    ids = tok.encode("pick up the RED cube")
    assert tok.decode(ids) == "pick up the red cube"
    batch = tok.encode_batch(["pick up the cube", "put the cube down ."], max_len=8)
    assert batch.shape == (2, 5) and batch[0, 4] == 0 and batch.dtype == np.int64


def test_word_tokenizer_refuses_unknown_words_and_names_them():
    tok = WordTokenizer.build(["pick up the red cube"])
    with pytest.raises(InstructionError, match=r"unknown word\(s\) \['blue'\]"):
        tok.encode("pick up the blue cube")
    with pytest.raises(InstructionError, match="max_instruction_len=3"):
        tok.encode_batch(["pick up the red cube"], max_len=3)
    with pytest.raises(InstructionError, match="no words"):
        tok.encode("  ")
    with pytest.raises(ValueError, match="vocab"):
        WordTokenizer(["a", "b"])
