"""The state-aware world model: Cosmos-Predict2's video DiT made action-conditioned, with a reward head and a
robot-state head.

    frames (B, n_cond + K, H, W, 3) --codec--> latents (B, C, T, h, w), T = cond + predicted latent frames
    cond latents stay clean (noise level t_cond, condition-mask channel = 1), predicted latents are noised to t
    actions (B, K, 7) --MLP per latent frame--> (B, T_pred, D), added to the timestep embedding of that frame
    instruction --hashed words--> (B, L, text_dim) token embeddings for the cross-attention
    CosmosTransformer3DModel --> v (2B) or x0 (tiny) (B, C, T, h, w)      (flow matching, see flow.py)
    hidden states of the last block (B, T*h'*w', D) --pool per frame, MLP--> reward logits (B, K)
                                                    --pool per frame, MLP, + linear(commands)--> robot-state change (B, K, S)

How the action reaches the denoiser. Diffusers' Cosmos transformer turns a per-latent-frame timestep into ``temb``
(added to every block's AdaLN shift, scale and gate) and ``embedded_timestep`` (which each block's AdaLN-LoRA maps to
its own modulation). `WorldModel.transformer_pass` is that transformer's forward written out for the inputs this model
uses (one video, per-frame timesteps, text context; no ControlNet, no image context), with the per-frame action
embedding added to both timestep embeddings and the last block's hidden states returned beside the prediction, for the
reward and state heads. It calls diffusers' own sub-modules, so the state-dict keys and the pretrained 2B weights load
unchanged; tests/world_model/test_model.py checks that with no action it equals diffusers' forward exactly, so a
diffusers upgrade that changes the forward fails there. With pretrained Cosmos weights the action MLP's last layer
starts at zero, so the pretrained denoiser starts out unchanged. Diffusers' forward is not called, so its torchvision
dependency (the padding-mask resize of ``concat_padding_mask=True``, the real checkpoints' setting) is not needed: the
padding mask here is all zeros at the latent resolution.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from diffusers import AutoencoderKLWan, CosmosTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from learning.world_model.codec import PatchCodec, WanCodec
from learning.world_model.config import TINY_TRANSFORMER, WorldModelConfig, config_mismatch
from learning.world_model.flow import euler_step, euler_timesteps, velocity_from_x0

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint was made under another architecture config; the message lists the differing fields."""


class HashedInstructionEncoder(nn.Module):
    """Instruction -> (L, dim) token embeddings. Words are hashed (crc32) into a learned table, so no vocabulary
    file is needed and any instruction works; id 0 is padding. (The 2B checkpoints expect T5 embeddings; a T5
    encoder is not wired here, see README.)"""

    def __init__(self, vocab: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.vocab, self.max_len = vocab, max_len
        self.tokens = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.tokens.weight, std=0.02)

    def tokenize(self, instructions: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(instructions), self.max_len, dtype=torch.long)
        for i, text in enumerate(instructions):
            words = re.findall(r"[a-z0-9]+", text.lower())[: self.max_len]
            for j, w in enumerate(words):
                ids[i, j] = zlib.crc32(w.encode()) % (self.vocab - 1) + 1
        return ids  # (B, L)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tokens(ids) + self.pos)  # (B, L, dim)


class ActionEmbedding(nn.Module):
    """Actions of one latent frame (temporal_factor actions, concatenated) -> an offset for the two timestep
    embeddings of that frame (3D + D values). ``zero_init``: the last layer starts at zero, so a pretrained
    denoiser is unchanged at step 0 (used for Cosmos weights; a model trained from scratch learns faster from a
    small random start, measured on the action-following test)."""

    def __init__(self, action_dim: int, temporal_factor: int, hidden: int, out_dim: int, zero_init: bool = False,
                 cumulative: bool = False) -> None:
        super().__init__()
        self.temporal_factor, self.cumulative = temporal_factor, cumulative
        per_step = action_dim + (3 if cumulative else 0)
        self.net = nn.Sequential(nn.Linear(per_step * temporal_factor, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))
        if zero_init:
            self.zero_last_layer()

    def zero_last_layer(self) -> None:
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if self.cumulative:  # + the translation commanded since the conditioning frame, at each step
            actions = torch.cat([actions, actions[..., :3].cumsum(1)], -1)
        B, K, A = actions.shape
        a = actions.reshape(B, K // self.temporal_factor, self.temporal_factor * A)  # (B, T_pred, f*A)
        return self.net(a)  # (B, T_pred, 4D)


class FrameHead(nn.Module):
    """Per-frame outputs from the denoiser's hidden states: mean- and max-pool each latent frame's tokens (the max
    keeps small, local evidence such as the cube sitting on the goal), then a small MLP to ``outputs`` values for
    each of the latent frame's ``temporal_factor`` frames. The reward head (1 logit) and the state head (S values)."""

    def __init__(self, dim: int, hidden: int, temporal_factor: int, outputs: int = 1) -> None:
        super().__init__()
        self.temporal_factor, self.outputs = temporal_factor, outputs
        self.net = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, hidden), nn.SiLU(), nn.Linear(hidden, temporal_factor * outputs))

    def forward(self, hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
        B, N, D = hidden.shape
        h = hidden.float().view(B, num_frames, N // num_frames, D)  # (B, T, tokens per frame, D)
        feats = torch.cat([h.mean(2), h.amax(2)], -1)  # (B, T, 2D)
        return self.net(feats).view(B, num_frames * self.temporal_factor, self.outputs)  # (B, T * f, outputs)


class StateHead(FrameHead):
    """The robot-state head: a `FrameHead` on the hidden states plus a linear map of each frame's commands (the
    translation commanded since the conditioning frame, the gripper command). The linear part is dead reckoning
    with a learned gain (the arm covers only part of each commanded step); the hidden states add what the frames
    show and the commands do not (the table stops the hand, the gripper closes on the cube or on nothing)."""

    COMMANDS = 4  # cumulative x, y, z translation command + the frame's gripper command

    def __init__(self, dim: int, hidden: int, temporal_factor: int, outputs: int) -> None:
        super().__init__(dim, hidden, temporal_factor, outputs)
        self.command = nn.Linear(self.COMMANDS, outputs)

    def forward(self, hidden: torch.Tensor, num_frames: int, actions: torch.Tensor) -> torch.Tensor:
        """hidden (B, T*tokens, D), actions (B, K, A) of the K predicted frames -> (B, K, outputs)."""
        K = actions.shape[1]
        commands = torch.cat([actions[..., :3].float().cumsum(1), actions[..., 6:7].float()], -1)  # (B, K, 4)
        return super().forward(hidden, num_frames)[:, -K:] + self.command(commands)


# The state head's regression target is the state's change since the conditioning frame in these units, so every
# feature is of order 1 over a chunk: 1 = 10 cm of TCP travel (a chunk moves the arm up to a few cm), 1 = the whole
# gripper stroke or a quaternion component.
STATE_UNITS = {"ee_x": 10.0, "ee_y": 10.0, "ee_z": 10.0, "ee_qx": 1.0, "ee_qy": 1.0, "ee_qz": 1.0, "ee_qw": 1.0, "gripper": 1.0}


def state_units(features: Sequence[str]) -> torch.Tensor:
    """(S,) the factor that turns a state change in robot units (m, opening) into the state head's units."""
    return torch.tensor([STATE_UNITS[f] for f in features], dtype=torch.float32)


@dataclass
class WorldModelOutput:
    velocity: torch.Tensor  # (B, C, T_pred, h, w): predicted v for the predicted latent frames (converted from x0_hat
    # when the transformer predicts clean latents, see flow.py)
    x0: torch.Tensor  # (B, C, T_pred, h, w): the implied clean latents
    reward_logits: torch.Tensor | None  # (B, K) per-frame success logits, None without a reward head
    state_delta: torch.Tensor | None = None  # (B, K, S) each frame's robot state minus the conditioning frame's, in
    # `STATE_UNITS` (state_features order); None without a state head


_D = WorldModelConfig()  # the one source of the constructor's defaults
_WM_FIELDS = {f.name for f in fields(WorldModelConfig)}


class WorldModel(ModelMixin, ConfigMixin):
    """Action-conditioned Cosmos world model with a reward head and a robot-state head. Construct from a `WorldModelConfig`
    (``WorldModel.from_wm_config(cfg)``), a saved folder (``load_world_model``) or a Cosmos-Predict2 folder
    (``WorldModel.from_cosmos``). Config keys are the fields of `WorldModelConfig`."""

    ignore_for_config = ["pretrained_modules"]

    @register_to_config
    def __init__(self, image_size: int = _D.image_size, chunk: int = _D.chunk, n_cond: int = _D.n_cond,
                 action_dim: int = _D.action_dim, codec: str = _D.codec, patch_factor: int = _D.patch_factor,
                 patch_frames: int = _D.patch_frames, patch_scale: float = _D.patch_scale,
                 transformer_kwargs: dict | None = None, vae_kwargs: dict | None = _D.vae_kwargs, text_vocab: int = _D.text_vocab,
                 text_len: int = _D.text_len, action_hidden: int = _D.action_hidden,
                 action_cumulative: bool = _D.action_cumulative, reward_head: bool = _D.reward_head,
                 reward_hidden: int = _D.reward_hidden, state_features: Sequence[str] = _D.state_features,
                 state_hidden: int = _D.state_hidden, prediction: str = _D.prediction, residual: bool = _D.residual,
                 cond_concat: bool = _D.cond_concat, t_cond: float = _D.t_cond, timestep_scale: float = _D.timestep_scale,
                 rope_fps: float | None = _D.rope_fps, pretrained_modules: dict[str, nn.Module] | None = None) -> None:
        # The arguments are `WorldModelConfig`'s fields with its defaults (diffusers' config needs them spelled out);
        # transformer_kwargs=None is the tiny CPU transformer.
        given = {k: v for k, v in locals().items() if k in _WM_FIELDS}
        super().__init__()
        cfg = WorldModelConfig(**{**given, "transformer_kwargs": dict(transformer_kwargs if transformer_kwargs is not None else TINY_TRANSFORMER),
                                  "state_features": tuple(state_features)})
        self.wm_config = cfg
        pre = pretrained_modules or {}
        C, D = cfg.latent_channels, cfg.hidden_size
        if cfg.codec == "patch":
            self.latent_codec: nn.Module = PatchCodec(cfg.patch_factor, cfg.patch_scale, cfg.patch_frames)
        else:
            self.latent_codec = WanCodec(pre.get("vae") or AutoencoderKLWan(**cfg.vae_kwargs))
        tk = dict(cfg.transformer_kwargs)
        tk.setdefault("max_size", [cfg.cond_latent_frames + cfg.pred_latent_frames, cfg.latent_size, cfg.latent_size])
        C_in = 2 * C if cfg.cond_concat else C
        transformer = pre.get("transformer") or CosmosTransformer3DModel(in_channels=C_in + 1, out_channels=C, **tk)
        if transformer.config.in_channels != C_in + 1 or transformer.config.out_channels != C:
            raise ValueError(f"transformer: in/out channels {transformer.config.in_channels}/{transformer.config.out_channels} "
                             f"do not fit the codec's {C} latent channels (+1 condition mask)")
        self.transformer = transformer
        text_dim = int(transformer.config.text_embed_dim)
        self.text_encoder = HashedInstructionEncoder(cfg.text_vocab, text_dim, cfg.text_len)
        self.action_mlp = ActionEmbedding(cfg.action_dim, cfg.temporal_factor, cfg.action_hidden, 4 * D, zero_init=bool(pre),
                                         cumulative=cfg.action_cumulative)
        self.reward_net = FrameHead(D, cfg.reward_hidden, cfg.temporal_factor) if cfg.reward_head else None
        S = len(cfg.state_features)
        self.state_net = StateHead(D, cfg.state_hidden, cfg.temporal_factor, S) if S else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_wm_config(cls, cfg: WorldModelConfig) -> "WorldModel":
        return cls(**cfg.to_dict())

    @classmethod
    def from_cosmos(cls, folder: str | Path, torch_dtype: torch.dtype | None = None, **overrides: Any) -> "WorldModel":
        """The full-size model: Cosmos-Predict2 Video2World ``transformer/`` and ``vae/`` from a local folder
        (a diffusers pipeline folder, e.g. nvidia/Cosmos-Predict2-2B-Video2World downloaded beforehand), loaded
        with ``from_pretrained``; the action MLP, instruction encoder, reward and state heads start fresh.
        ``overrides`` are `WorldModelConfig` fields (image_size, chunk, ...)."""
        folder = Path(folder)
        for sub in ("transformer", "vae"):
            if not (folder / sub / "config.json").exists():
                raise FileNotFoundError(f"{folder / sub}: no config.json; expected a Cosmos-Predict2 Video2World folder with transformer/ and vae/")
        kw = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
        transformer = CosmosTransformer3DModel.from_pretrained(folder / "transformer", **kw)
        vae = AutoencoderKLWan.from_pretrained(folder / "vae", **kw)
        tk = {k: v for k, v in transformer.config.items() if not k.startswith("_") and k not in ("in_channels", "out_channels")}
        vk = {k: v for k, v in vae.config.items() if not k.startswith("_")}
        # Cosmos-Predict2 feeds t = sigma / (1 + sigma) unscaled and RoPE at 16 fps (Cosmos2VideoToWorldPipeline).
        params = {"codec": "wan", "transformer_kwargs": tk, "vae_kwargs": vk, "prediction": "velocity", "residual": False, "timestep_scale": 1.0, "rope_fps": 16.0,
                  "image_size": 256, "chunk": 8, **overrides}
        cfg = WorldModelConfig.from_dict(params)
        model = cls(**cfg.to_dict(), pretrained_modules={"transformer": transformer, "vae": vae})
        return model.to(transformer.dtype) if torch_dtype is not None else model

    # ------------------------------------------------------------------ codec and text
    def tokenize(self, instructions: Sequence[str]) -> torch.Tensor:
        return self.text_encoder.tokenize(instructions).to(self.device)

    def _check_frames(self, frames: torch.Tensor, name: str) -> None:
        S = self.wm_config.image_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (S, S, 3) or frames.dtype != torch.uint8:
            raise ValueError(f"{name}: expected (B, T, {S}, {S}, 3) uint8 frames (this world model's image size), got {tuple(frames.shape)} {frames.dtype}")

    def encode_window(self, cond: torch.Tensor, nxt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """cond (B, n_cond, H, W, 3) uint8 [, next frames (B, K, H, W, 3) uint8] -> cond latents (B, C, Tc, h, w)
        [, next latents (B, C, Tp, h, w)]."""
        cfg = self.wm_config
        self._check_frames(cond, "conditioning frames")
        if cond.shape[1] != cfg.n_cond:
            raise ValueError(f"conditioning frames: {cond.shape[1]} given, the model conditions on n_cond={cfg.n_cond}")
        if nxt is not None:
            self._check_frames(nxt, "next frames")
            if nxt.shape[1] != cfg.chunk:
                raise ValueError(f"next frames: a window of {nxt.shape[1]} frames, the model predicts chunks of {cfg.chunk}")
        cond, nxt = cond.to(self.device), None if nxt is None else nxt.to(self.device)
        if cfg.codec == "wan":  # causal VAE: the first frame alone, then groups of 4 -- encode the window as one video
            if nxt is None:
                return self.latent_codec.encode(cond), None
            z = self.latent_codec.encode(torch.cat([cond, nxt], 1))
            return z[:, :, :1], z[:, :, 1:]
        pad = cfg.cond_latent_frames * cfg.patch_frames - cfg.n_cond  # repeat the earliest frame to fill the first group
        cond_full = torch.cat([cond[:, :1].expand(-1, pad, -1, -1, -1), cond], 1) if pad else cond
        return self.latent_codec.encode(cond_full), None if nxt is None else self.latent_codec.encode(nxt)

    def decode_next(self, cond: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """cond latents (B, C, Tc, h, w), next latents (B, C, Tp, h, w) -> next frames (B, K, H, W, 3) uint8."""
        if self.wm_config.codec == "wan":
            return self.latent_codec.decode(torch.cat([cond, nxt], 2))[:, 1:]
        return self.latent_codec.decode(nxt)

    # ------------------------------------------------------------------ denoiser
    def transformer_pass(self, x: torch.Tensor, timestep: torch.Tensor, action_emb: torch.Tensor, text: torch.Tensor,
                         cond_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Diffusers' ``CosmosTransformer3DModel.forward`` for this model's inputs, with the actions added to the
        timestep embeddings (see the module docstring).

        x (B, C_in, T, h, w) latents; timestep (B, T) per latent frame; action_emb (B, T, 4D) = [added to temb (3D) |
        added to embedded_timestep (D)], zeros on the conditioning frames; text (B, L, text_dim); cond_mask (B, 1, T,
        h, w). Returns the prediction (B, C, T, h, w) and the last block's hidden states (B, T*h'*w', D)."""
        tr = self.transformer
        B, _, T, H, W = x.shape
        x = torch.cat([x, cond_mask], 1)
        if tr.config.concat_padding_mask:  # no padding anywhere
            x = torch.cat([x, x.new_zeros(B, 1, T, H, W)], 1)
        rotary = tr.rope(x, fps=self.wm_config.rope_fps)
        extra_pos = tr.learnable_pos_embed(x) if tr.config.extra_pos_embed_type else None
        p_t, p_h, p_w = tr.config.patch_size
        Tq, Hq, Wq = T // p_t, H // p_h, W // p_w
        hidden = tr.patch_embed(x).flatten(1, 3)  # (B, T'*h'*w', D)
        temb, embedded_timestep = tr.time_embed(hidden, timestep.flatten())  # (B*T, 3D), (B*T, D)
        D = embedded_timestep.shape[-1]
        a = action_emb.flatten(0, 1).to(temb.dtype)
        temb, embedded_timestep = temb + a[:, : 3 * D], embedded_timestep + a[:, 3 * D:]
        # one embedding per latent frame, repeated over its tokens (p_t is 1, so latent frames are token frames)
        temb, embedded_timestep = (e.view(B, Tq, 1, 1, -1).expand(-1, -1, Hq, Wq, -1).flatten(1, 3) for e in (temb, embedded_timestep))
        context = tr.crossattn_proj(text) if tr.config.use_crossattn_projection else text
        for block in tr.transformer_blocks:
            hidden = block(hidden, context, embedded_timestep, temb, rotary, extra_pos)
        out = tr.proj_out(tr.norm_out(hidden, embedded_timestep, temb))
        out = out.unflatten(2, (p_h, p_w, p_t, -1)).unflatten(1, (Tq, Hq, Wq))
        out = out.permute(0, 7, 1, 6, 2, 4, 3, 5).flatten(6, 7).flatten(4, 5).flatten(2, 3)  # diffusers' unpatchify order
        return out, hidden

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, actions: torch.Tensor, text_ids: torch.Tensor,
                t_cond: torch.Tensor | None = None) -> WorldModelOutput:
        """One denoiser call.

        noisy (B, C, T_pred, h, w) predicted latents at noise level t (B,); cond (B, C, T_cond, h, w) conditioning
        latents (clean, or at noise level t_cond (B,) when given); actions (B, K, A); text_ids (B, L).
        """
        cfg = self.wm_config
        B, C, Tp = noisy.shape[:3]
        Tc = cond.shape[2]
        if actions.shape[1:] != (cfg.chunk, cfg.action_dim):
            raise ValueError(f"actions: expected (B, {cfg.chunk}, {cfg.action_dim}), got {tuple(actions.shape)}")
        x = torch.cat([cond, noisy], 2)  # (B, C, T, h, w)
        T, h, w = x.shape[2:]
        if cfg.cond_concat:  # every latent frame also carries the last conditioning frame in its channels
            x = torch.cat([x, self.latent_codec.hold_last(cond).expand(-1, -1, T, -1, -1)], 1)  # (B, 2C, T, h, w)
        tc = torch.full((B,), cfg.t_cond, device=x.device) if t_cond is None else t_cond
        timestep = torch.cat([tc[:, None].expand(B, Tc), t[:, None].expand(B, Tp)], 1) * cfg.timestep_scale  # (B, T)
        cond_mask = torch.zeros(B, 1, T, h, w, dtype=x.dtype, device=x.device)
        cond_mask[:, :, :Tc] = 1.0
        a_emb = self.action_mlp(actions.to(x.dtype))  # (B, T_pred, 4D)
        a_emb = torch.cat([a_emb.new_zeros(B, Tc, a_emb.shape[-1]), a_emb], 1)  # (B, T, 4D); cond frames: no action
        out, hidden = self.transformer_pass(x, timestep.to(x.dtype), a_emb, self.text_encoder(text_ids).to(x.dtype), cond_mask)
        logits = state = None
        if self.reward_net is not None:
            logits = self.reward_net(hidden, T)[:, Tc * self.reward_net.temporal_factor:, 0]  # (B, K): drop the cond frames
        if self.state_net is not None:
            state = self.state_net(hidden, T, actions.clamp(-1, 1))  # (B, K, S): the predicted frames
        pred = out[:, :, Tc:].float()
        if cfg.residual:  # x0_hat = (last conditioning frame, held still) + the predicted change
            pred = pred + self.latent_codec.hold_last(cond).float()
        if cfg.prediction == "velocity":
            velocity, x0 = pred, noisy.float() - t.view(-1, 1, 1, 1, 1) * pred
        else:
            velocity, x0 = velocity_from_x0(noisy.float(), pred, t), pred
        return WorldModelOutput(velocity=velocity, x0=x0, reward_logits=logits, state_delta=state)

    @torch.no_grad()
    def generate(self, cond: torch.Tensor, actions: torch.Tensor, text_ids: torch.Tensor, noise: torch.Tensor,
                 num_inference_steps: int = 2, shift: float = 1.0, reward_from: str = "last_step"
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Sample the next chunk's latents by Euler integration from noise (t = 1) to t = 0.

        The reward and the state are read from the denoiser's hidden states either at the last Euler step
        (``"last_step"``: no extra cost; the input there, x at t = t_{N-1}, is drawn from the same noisy marginal the
        heads were trained on) or in one extra pass at t = 0 on the sampled latents (``"clean"``). Returns latents
        (B, C, T_pred, h, w), success probabilities (B, K) (None without a reward head) and the state change since
        the conditioning frame (B, K, S) in robot units (None without a state head)."""
        if reward_from not in ("last_step", "clean"):
            raise ValueError(f"reward_from: {reward_from!r} is not 'last_step' or 'clean'")
        ts = euler_timesteps(num_inference_steps, shift, device=noise.device)
        B = noise.shape[0]
        x = noise
        out = None
        for i in range(num_inference_steps):
            out = self(x, ts[i].expand(B), cond, actions, text_ids)
            x = euler_step(x, out.velocity, ts[i], ts[i + 1]).to(noise.dtype)
        if (self.reward_net is not None or self.state_net is not None) and reward_from == "clean":
            out = self(x, torch.zeros(B, device=x.device), cond, actions, text_ids)
        probs = None if out.reward_logits is None else torch.sigmoid(out.reward_logits.float())
        delta = None if out.state_delta is None else out.state_delta.float() / state_units(self.wm_config.state_features).to(x.device)
        return x, probs, delta

    def noise_shape(self, batch: int) -> tuple[int, int, int, int, int]:
        cfg = self.wm_config
        return (batch, cfg.latent_channels, cfg.pred_latent_frames, cfg.latent_size, cfg.latent_size)


MODEL_DIR = "model"


def model_folder(path: str | Path) -> Path:
    """A checkpoint folder (with model/) or a model folder (with config.json) -> the model folder."""
    path = Path(path)
    if (path / MODEL_DIR / "config.json").exists():
        return path / MODEL_DIR
    if (path / "config.json").exists():
        return path
    raise FileNotFoundError(f"{path}: not a world-model checkpoint (no model/config.json or config.json)")


def load_world_model(path: str | Path, expect: WorldModelConfig | dict | None = None, device: str | torch.device = "cpu",
                     torch_dtype: torch.dtype | None = None) -> WorldModel:
    """Load a world model saved with ``save_pretrained`` (or a training checkpoint folder, whose model/ holds
    the EMA weights). With ``expect``, a checkpoint made under another architecture config is refused with
    a `CheckpointMismatchError` naming every differing field."""
    folder = model_folder(path)
    saved = json.loads((folder / "config.json").read_text())
    if saved.get("_class_name") != WorldModel.__name__:
        raise CheckpointMismatchError(f"{folder}: holds a {saved.get('_class_name')!r}, not a {WorldModel.__name__}")
    legacy = {} if "state_features" in saved else {"state_features": ()}  # saved before the state head existed: none
    saved.update(legacy)
    if expect is not None:
        want = expect.to_dict() if isinstance(expect, WorldModelConfig) else WorldModelConfig.from_dict(dict(expect)).to_dict()
        have = WorldModelConfig.from_dict({k: v for k, v in saved.items() if not k.startswith("_")}).to_dict()
        diff = config_mismatch(have, want)
        if diff:
            raise CheckpointMismatchError(f"{folder}: checkpoint was made with another world-model config ({'; '.join(diff)}; checkpoint != expected)")
    kw = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    model = WorldModel.from_pretrained(folder, **kw, **legacy)
    return model.to(device).eval()
