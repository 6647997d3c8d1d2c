"""Tokenizers of the compact VLA: action bins (OpenVLA-style, 256 per dimension) and a word-level instruction
tokenizer that is saved with the weights.

Both are pure numpy so the export and the tests can use them without a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

PAD = "<pad>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class InstructionError(ValueError):
    """An instruction cannot be tokenized (unknown word, too long, empty); the message names the word."""


@dataclass(frozen=True)
class ActionTokenizer:
    """Uniform bins over [low, high] per action dimension; bin i has centre ``low + i * (high - low) / (n_bins - 1)``.

    Centres include both ends, so the gripper's -1 / +1 are represented exactly. An action maps to its
    nearest centre; values outside [low, high] are clipped first.
    """

    n_bins: int = 256
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise ValueError(f"n_bins: must be >= 2, got {self.n_bins}")
        if not self.high > self.low:
            raise ValueError(f"low/high: high ({self.high}) must be above low ({self.low})")

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / (self.n_bins - 1)

    @property
    def centres(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.n_bins, dtype=np.float32)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """actions (..., D) float -> tokens (..., D) int64 in [0, n_bins)."""
        a = np.clip(np.asarray(actions, dtype=np.float64), self.low, self.high)
        return np.rint((a - self.low) / self.bin_width).astype(np.int64)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (..., D) int -> actions (..., D) float32 (bin centres)."""
        t = np.asarray(tokens)
        if t.size and (t.min() < 0 or t.max() >= self.n_bins):
            raise ValueError(f"tokens: values must be in [0, {self.n_bins}), got [{t.min()}, {t.max()}]")
        return (self.low + t.astype(np.float64) * self.bin_width).astype(np.float32)


class WordTokenizer:
    """Lower-cased words and punctuation -> ids. Id 0 is padding; there is no <unk>: an unknown word is an error,
    because a policy given an instruction it never saw would act on a silently different one."""

    def __init__(self, vocab: Sequence[str]) -> None:
        vocab = list(vocab)
        if not vocab or vocab[0] != PAD:
            raise ValueError(f"vocab: must start with {PAD!r}, got {vocab[:1]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab: has duplicate entries")
        self.vocab = vocab
        self._ids = {w: i for i, w in enumerate(vocab)}

    @staticmethod
    def words(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    @classmethod
    def build(cls, instructions: Sequence[str]) -> "WordTokenizer":
        """A vocabulary of every word in ``instructions`` (sorted, so the same set gives the same ids)."""
        words = sorted({w for text in instructions for w in cls.words(text)})
        if not words:
            raise InstructionError("instructions: no words to build a vocabulary from")
        return cls([PAD] + words)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise InstructionError(f"instruction: expected a string, got {type(text).__name__}")
        words = self.words(text)
        if not words:
            raise InstructionError(f"instruction {text!r}: has no words")
        unknown = [w for w in words if w not in self._ids]
        if unknown:
            raise InstructionError(
                f"instruction {text!r}: unknown word(s) {unknown}; this policy knows {len(self.vocab) - 1} words "
                f"(trained on instructions made of: {' '.join(self.vocab[1:])})"
            )
        return [self._ids[w] for w in words]

    def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """(B, L) int64 padded with 0 to the longest instruction; longer than ``max_len`` is an error."""
        ids = [self.encode(t) for t in texts]
        too_long = [(t, len(i)) for t, i in zip(texts, ids) if len(i) > max_len]
        if too_long:
            raise InstructionError(f"instruction {too_long[0][0]!r}: {too_long[0][1]} words, over max_instruction_len={max_len}")
        L = max(len(i) for i in ids)
        out = np.zeros((len(ids), L), dtype=np.int64)
        for b, i in enumerate(ids):
            out[b, : len(i)] = i
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i != 0)
