"""A Hugging Face vision-language model turned into a VLA the OpenVLA way.

Any ``transformers`` image-text-to-text model (``AutoModelForImageTextToText`` + ``AutoProcessor``, loaded
from a local folder: Llava, PaliGemma, Idefics, ...) becomes a policy by giving each of the 256 action bins
one *reserved vocabulary token* -- by default the last 256 ids of the tokenizer, as OpenVLA overwrites the
least-used Llama tokens -- and decoding the K * D action tokens autoregressively after the prompt::

    <image tokens> In: What action should the robot take to {instruction}?{state}\\nOut: a_0 a_1 ... a_{N-1}

With ``state_features`` (`robot.state`), the robot state is written into the prompt as text (`` State: 0.012
-0.034 0.180 1.000``, raw units, 3 decimals), as pi0-FAST tokenises proprioception; without, ``{state}`` is
empty.

Only the reserved tokens compete at each action position (the softmax is restricted to them), so a
sampled token is always a bin, and ``token_log_probs`` (teacher forcing, one forward pass) recomputes
exactly the log-probabilities ``sample`` (incremental, KV cache) drew with.

The folder written by ``save_pretrained`` holds the model and processor files as transformers writes them,
plus ``wvl_vla.json`` (this adapter's settings); `learning.policy.load_policy` recognises it by that file.
This policy runs where torch runs (a GPU box); the robot's ONNX artifact comes from the compact VLA.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learning.policy.base import PolicyInputError, PolicyMixin
from learning.policy.tokenizers import ActionTokenizer
from robot.config_dict import dataclass_from_dict

ADAPTER_FILE = "wvl_vla.json"


@dataclass(frozen=True)
class HFVLAConfig:
    chunk_length: int = 8  # K
    action_dim: int = 7  # D
    n_bins: int = 256  # V
    action_token_ids: tuple[int, ...] | None = None  # vocabulary id of each bin; None = the last n_bins ids
    prompt: str = "In: What action should the robot take to {instruction}?{state}\nOut:"
    instructions: tuple[str, ...] = ()  # seen in training; the first is the default
    state_features: tuple[str, ...] = ()  # robot.state features written into the prompt; () = none
    camera: str = "front"
    control_hz: float = 10.0

    def __post_init__(self) -> None:
        for name in ("chunk_length", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_bins < 2:
            raise ValueError(f"n_bins: must be >= 2, got {self.n_bins}")
        if "{instruction}" not in self.prompt:
            raise ValueError(f"prompt: must contain '{{instruction}}', got {self.prompt!r}")
        if self.state_features:
            from robot.state import check_state_features

            check_state_features(self.state_features, "state_features")
            if "{state}" not in self.prompt:
                raise ValueError(f"prompt: a policy with state_features needs '{{state}}' in its prompt, got {self.prompt!r}")
        if self.action_token_ids is not None and len(set(self.action_token_ids)) != self.n_bins:
            raise ValueError(f"action_token_ids: need {self.n_bins} distinct ids, got {len(set(self.action_token_ids))}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HFVLAConfig":
        return dataclass_from_dict(cls, d, ADAPTER_FILE)


class HFVLA(nn.Module, PolicyMixin):
    """See the module docstring. Build with `HFVLA.from_pretrained(folder)`."""

    def __init__(self, model: nn.Module, processor: Any, config: HFVLAConfig) -> None:
        super().__init__()
        self.model, self.processor, self.config = model, processor, config
        self.chunk_length, self.action_dim = config.chunk_length, config.action_dim
        self.action_tokenizer = ActionTokenizer(config.n_bins)
        tok = processor.tokenizer
        tok.padding_side = "left"  # prompts end where the action tokens start, for every row of a batch
        vocab = len(tok)
        ids = list(config.action_token_ids) if config.action_token_ids is not None else list(range(vocab - config.n_bins, vocab))
        n_out = model.get_output_embeddings().weight.shape[0]
        if min(ids) < 0 or max(ids) >= n_out:
            raise ValueError(f"action_token_ids: must be in [0, {n_out}) (the model's output vocabulary), got [{min(ids)}, {max(ids)}]")
        special = {i for i in (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, getattr(processor, "image_token_id", None)) if i is not None}
        clash = sorted(special & set(ids))
        if clash:
            raise ValueError(f"action_token_ids: {clash} are special tokens of the tokenizer (pad/bos/eos/image); reserve other ids")
        self.register_buffer("action_ids", torch.tensor(ids, dtype=torch.long), persistent=False)  # (V,) bin -> vocab id

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "HFVLA":
        """Load model + processor from a local folder; adapter settings from its wvl_vla.json (if any) and ``overrides``."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"hf.path: {folder} is not a folder with a transformers image-text-to-text model")
        settings: dict[str, Any] = {}
        if (folder / ADAPTER_FILE).exists():
            settings = json.loads((folder / ADAPTER_FILE).read_text())
        settings.update({k: v for k, v in overrides.items() if v is not None})
        config = HFVLAConfig.from_dict(settings)
        processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        return cls(model, processor, config)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)
        d = asdict(self.config)
        d["action_token_ids"] = [int(i) for i in self.action_ids.tolist()]
        d["instructions"] = list(d["instructions"])
        d["state_features"] = list(d["state_features"])
        (folder / ADAPTER_FILE).write_text(json.dumps(d, indent=2))

    @property
    def default_instruction(self) -> str:
        if not self.config.instructions:
            raise PolicyInputError("this policy was saved without a training instruction; pass one explicitly")
        return self.config.instructions[0]

    # ------------------------------------------------------------------ the prompt
    def _prompt_batch(self, images, instructions, states=None) -> dict[str, torch.Tensor]:
        imgs = self._images(images, None)
        texts = self._instructions(instructions, imgs.shape[0])
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise PolicyInputError(f"instructions: expected non-empty strings, got {t!r}")
        st = self._states(states, imgs.shape[0])
        state_texts = [""] * len(texts) if st is None else [" State: " + " ".join(f"{v:.3f}" for v in row) for row in st.tolist()]
        prompts = [self.config.prompt.format(instruction=t.strip().lower(), state=s) for t, s in zip(texts, state_texts)]
        image_token = getattr(self.processor, "image_token", None)
        if image_token:
            prompts = [p if image_token in p else image_token + p for p in prompts]
        enc = self.processor(images=list(imgs.cpu().numpy()), text=prompts, return_tensors="pt", padding=True)
        dev = self._device()
        return {k: v.to(dev) for k, v in enc.items() if isinstance(v, torch.Tensor)}

    @staticmethod
    def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids that ignore left padding: 0 at each row's first real token."""
        return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)

    # ------------------------------------------------------------------ the policy interface
    def _action_logits(self, images, instructions, tokens: torch.Tensor | None, states=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits over the bins at every action position: (B, N, V), and the checked tokens."""
        enc = self._prompt_batch(images, instructions, states)
        B = enc["input_ids"].shape[0]
        N = self.chunk_length * self.action_dim
        tok = self._tokens(tokens, B)
        # The prompt plus all but the last action token; the logits at the last N positions predict a_0..a_{N-1}.
        ids = torch.cat([enc["input_ids"], self.action_ids[tok[:, :-1]]], dim=1)  # (B, P + N - 1)
        mask = torch.cat([enc["attention_mask"], torch.ones(B, N - 1, dtype=enc["attention_mask"].dtype, device=ids.device)], dim=1)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=self._positions(mask), use_cache=False,
                         logits_to_keep=N, **extra)
        return out.logits[:, -N:, :][..., self.action_ids], tok  # (B, N, V)

    def token_log_probs(self, images, instructions, tokens, temperature: float = 1.0, states=None) -> torch.Tensor:
        t = self._check_temperature(temperature, allow_zero=False)
        logits, tok = self._action_logits(images, instructions, tokens, states)
        return torch.log_softmax(logits.float() / t, dim=-1).gather(-1, tok[..., None]).squeeze(-1)  # (B, N)

    def entropy(self, images, instructions, tokens=None, temperature: float = 1.0, states=None) -> torch.Tensor:
        """Per-token entropy along ``tokens`` (autoregressive: the distribution at position i depends on the
        tokens before it); without ``tokens``, along the greedy chunk."""
        t = self._check_temperature(temperature, allow_zero=False)
        if tokens is None:
            tokens = self.sample(images, instructions, temperature=0.0, states=states)[1]
        logits, _ = self._action_logits(images, instructions, tokens, states)
        logp = torch.log_softmax(logits.float() / t, dim=-1)
        return -(logp.exp() * logp).sum(-1)

    def _cache_kwargs(self, cache: Any) -> dict[str, Any]:
        """The KV cache argument under the name this transformers version uses (``cache`` since v5)."""
        return {self._cache_name: cache}

    @property
    def _cache_name(self) -> str:
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def sample(self, images, instructions, temperature: float = 1.0, generator: torch.Generator | None = None, states=None):
        """Autoregressive draw with a KV cache; the returned log-prob is then recomputed by `token_log_probs`
        (one teacher-forced pass), so that it equals what GRPO recomputes bit for bit, not just to float noise."""
        t = self._check_temperature(temperature, allow_zero=True)
        enc = self._prompt_batch(images, instructions, states)
        mask = enc["attention_mask"]
        B, N = mask.shape[0], self.chunk_length * self.action_dim
        pos = self._positions(mask)
        out = self.model(**enc, position_ids=pos, use_cache=True, logits_to_keep=1)
        tokens = torch.empty(B, N, dtype=torch.long, device=mask.device)
        for i in range(N):
            logits = out.logits[:, -1, :][:, self.action_ids].float()  # (B, V)
            if t == 0:
                tokens[:, i] = logits.argmax(-1)
            else:
                tokens[:, i] = torch.multinomial(torch.softmax(logits / t, dim=-1), 1, generator=generator).squeeze(-1)
            if i == N - 1:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            pos = pos[:, -1:] + 1
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            out = self.model(input_ids=self.action_ids[tokens[:, i:i + 1]], attention_mask=mask, position_ids=pos,
                             use_cache=True, logits_to_keep=1, **self._cache_kwargs(cache))
        if t == 0:
            log_prob = torch.zeros(B, device=tokens.device)
        else:
            log_prob = self.token_log_probs(images, instructions, tokens, temperature=t, states=states).sum(-1)
        return self.tokens_to_actions(tokens), tokens, log_prob


def reserved_action_tokens(n_bins: int = 256) -> list[str]:
    """Token strings a new tokenizer can append so that the last ``n_bins`` ids are free for the action bins."""
    return [f"<act_{i}>" for i in range(n_bins)]
