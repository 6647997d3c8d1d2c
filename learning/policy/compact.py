"""A compact vision-language-action model that trains on a CPU, with OpenVLA-OFT-style parallel decoding.

    image (B, 64, 64, 3) uint8 ──conv stem──> (B, P, d) patch tokens ─┐
    robot state (B, S) ──normalise, MLP────> (B, 1, d) state token ──┤
    instruction words ──embedding──────────> (B, L, d) text tokens ──┼─> bidirectional transformer
    K learned action queries ──────────────> (B, K, d) query tokens ─┘        │
                                                                             └─ query outputs ─> (B, K, D, V) logits

All K * D action tokens come from ONE forward pass and are independent categoricals given the context
(the OFT recipe): the log-probability of a chunk is the exact sum of per-token log-softmaxes, sampling is one
draw per token, and the deployed greedy policy is a single graph with no decoding loop (exported to ONNX as
is). The robot state (``state_features``, named in `robot.state`: by default the TCP position and the gripper
opening, as OpenVLA-OFT's proprioception) enters as one token; a policy built with ``state_features=()`` sees
the image only. Image and state normalisation statistics and the word vocabulary live in the config, so
`save_pretrained` / `from_pretrained` carry everything the policy needs (and the ONNX graph bakes them in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from learning.policy.base import PolicyInputError, PolicyMixin
from learning.policy.tokenizers import ActionTokenizer, WordTokenizer


@dataclass(frozen=True)
class CompactModelConfig:
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    conv_channels: tuple[int, ...] = (16, 32, 64, 128)
    coord_channels: bool = True
    keypoints: int = 32
    keypoint_level: int = 0  # 0 = from the input image, i = after the i-th conv
    action_head: str = "categorical"  # categorical | gaussian (see CompactVLA)
    max_instruction_len: int = 24
    fused_token: bool = True  # an MLP token over [state, keypoint coordinates] (see CompactVLA)
    patch_tokens: bool = True  # False: the image enters only through the keypoints (see CompactVLA)
    trunk: str = "transformer"  # transformer | mlp (see CompactVLA)
    trunk_keypoints: bool = True  # trunk=mlp reads the keypoints; false = only state + aux predictions (see CompactVLA)
    aux_features: bool = False  # the aux head's predictions feed the fused token / mlp (see CompactVLA; needs aux_weight > 0)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "mlp_ratio", "max_instruction_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}: must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model: {self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if self.keypoints < 0:
            raise ValueError(f"model.keypoints: must be >= 0, got {self.keypoints}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout: must be in [0, 1), got {self.dropout}")


_M = CompactModelConfig()  # the one source of the architecture defaults below


class Block(nn.Module):
    """Pre-norm transformer block; ``bias`` (B, 1, S, S) is added to the attention scores (-inf masks padding)."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, S, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, S, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, h, S, d/h)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(B, S, d))
        return x + F.dropout(self.mlp(self.ln2(x)), self.dropout, self.training)


class CompactVLA(ModelMixin, ConfigMixin, PolicyMixin):
    """See the module docstring. Construct with the instruction vocabulary (`WordTokenizer.build(...).vocab`)."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        vocab: Sequence[str] = ("<pad>",),
        image_size: int = 64,  # square RGB input, px
        chunk_length: int = 8,  # K
        action_dim: int = 7,  # D
        n_bins: int = 256,  # V, uniform over [-1, 1]
        max_instruction_len: int = _M.max_instruction_len,  # words
        d_model: int = _M.d_model,
        n_layers: int = _M.n_layers,
        n_heads: int = _M.n_heads,
        mlp_ratio: int = _M.mlp_ratio,
        dropout: float = _M.dropout,
        conv_channels: Sequence[int] = _M.conv_channels,  # each conv halves the resolution: 64 -> 4x4 patches
        coord_channels: bool = _M.coord_channels,  # append x/y pixel coordinates to the input (CoordConv): easier localisation
        keypoints: int = _M.keypoints,  # spatial-softmax keypoint tokens (0 = none)
        keypoint_level: int = _M.keypoint_level,  # which map they come from: 0 = the input image, i = after the i-th conv
        aux_dim: int = 0,  # training-only auxiliary targets read out of the keypoints (0 = none), see `logits_and_aux`
        action_head: str = _M.action_head,  # "categorical": free logits per bin; "gaussian": a discretised Gaussian per token
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),  # per channel, on [0, 1] pixels (set from the data by SFT)
        image_std: Sequence[float] = (0.25, 0.25, 0.25),
        camera: str = "front",
        control_hz: float = 10.0,
        instructions: Sequence[str] = (),  # the instructions seen in training; the first is the default
        action_stats: dict[str, Any] | None = None,  # per-dimension min/max/mean/std of the training actions (info)
        camera_info: dict[str, Any] | None = None,  # the training episodes' camera framing (Episode.info["camera"])
        state_features: Sequence[str] = (),  # robot.state feature names of the state input, in order; () = no state input
        state_mean: Sequence[float] | None = None,  # per feature (set from the data by SFT)
        state_std: Sequence[float] | None = None,
        fused_token: bool = _M.fused_token,  # one more token: an MLP over [normalised state, all keypoint (x, y)], see below
        patch_tokens: bool = _M.patch_tokens,  # the conv stem's patch tokens enter the transformer; False = keypoints only, see below
        trunk: str = _M.trunk,  # "transformer" over tokens | "mlp" over [state, keypoints, instruction], see below
        aux_features: bool = _M.aux_features,  # the aux head's predictions (gradient stopped) are also inputs of the fused token / mlp
        trunk_keypoints: bool = _M.trunk_keypoints,  # trunk=mlp reads the keypoints; False = only [state, aux predictions, instruction]
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model: {d_model} is not divisible by n_heads={n_heads}")
        grid = image_size // 2 ** len(conv_channels)
        if grid < 1 or image_size % 2 ** len(conv_channels):
            raise ValueError(f"image_size: {image_size} is not divisible by 2**{len(conv_channels)} (one halving per conv_channels entry)")
        self.chunk_length, self.action_dim, self.n_bins = chunk_length, action_dim, n_bins
        self.image_hw = (image_size, image_size)
        self.action_tokenizer = ActionTokenizer(n_bins)
        self.word_tokenizer = WordTokenizer(vocab)

        if keypoints and not 0 <= keypoint_level <= len(conv_channels):
            raise ValueError(f"keypoint_level: {keypoint_level} is outside 0..{len(conv_channels)} (0 = input, i = after conv i)")
        if trunk not in ("transformer", "mlp"):
            raise ValueError(f"trunk: {trunk!r} is not 'transformer' or 'mlp'")
        if trunk == "mlp" and (patch_tokens or not keypoints):
            raise ValueError("trunk: 'mlp' reads the keypoints and the state, not patch tokens; set patch_tokens=false, keypoints > 0")
        if not trunk_keypoints and not (trunk == "mlp" and aux_features):
            raise ValueError("trunk_keypoints: false leaves the mlp trunk the aux predictions alone; set trunk=mlp, aux_features=true")
        if aux_features and not aux_dim:
            raise ValueError("aux_features: they are the aux head's predictions; set aux_dim > 0")
        if aux_features and trunk == "transformer" and not fused_token:
            raise ValueError("aux_features: the transformer reads them through the fused token; set fused_token=true")
        if not patch_tokens and not keypoints:
            raise ValueError("patch_tokens: without patch tokens the image enters through the keypoints; set keypoints > 0")
        # Without patch tokens the image reaches the actions only through the keypoints' (x, y): a low-dimensional
        # bottleneck (Levine et al. 2016) that cannot memorise a scene's look, only where things are. The convs
        # past the keypoints' level are then not built.
        n_convs = len(conv_channels) if patch_tokens else keypoint_level
        stages, c_in = [], 3 + 2 * bool(coord_channels)
        for c in conv_channels[:n_convs]:
            stages.append(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()))
            c_in = c
        self.stages = nn.ModuleList(stages)
        if patch_tokens:
            self.patch_proj = nn.Conv2d(c_in, d_model, 1)
            self.image_pos = nn.Parameter(torch.randn(grid * grid, d_model) * 0.02)
        # Coordinate grids in [-1, 1]: the CoordConv input channels and the keypoints' expected positions.
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)  # (1, 2, H, W)
        if keypoints:
            h = image_size // 2**keypoint_level
            ky, kx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, h), indexing="ij")
            self.register_buffer("kp_grid", torch.stack([kx.flatten(), ky.flatten()], -1), persistent=False)  # (h*w, 2)
            c_kp = (3 + 2 * bool(coord_channels)) if keypoint_level == 0 else conv_channels[keypoint_level - 1]
            # At the input level a 3x3 filter on the colours: a keypoint can become "the centre of the red blob".
            self.kp_conv = nn.Conv2d(c_kp, keypoints, 3 if keypoint_level == 0 else 1, padding=1 if keypoint_level == 0 else 0)
            if trunk == "transformer":  # keypoint tokens
                self.kp_proj = nn.Linear(2, d_model)
                self.kp_emb = nn.Parameter(torch.randn(keypoints, d_model) * 0.02)
        if aux_dim:
            if not keypoints:
                raise ValueError("aux_dim: the auxiliary head reads the keypoints; set keypoints > 0")
            # A small readout of training-only targets (SFT: the gripper's and the object's position now, the end
            # point) from the keypoint coordinates: the keypoints track what the actions depend on. In the ONNX graph
            # only with ``aux_features`` (its predictions then feed the actions).
            self.aux_head = nn.Sequential(nn.Linear(2 * keypoints, 128), nn.GELU(), nn.Linear(128, aux_dim))
        self.word_emb = nn.Embedding(len(vocab), d_model, padding_idx=0)
        if trunk == "transformer":
            self.text_pos = nn.Parameter(torch.randn(max_instruction_len, d_model) * 0.02)
            self.queries = nn.Parameter(torch.randn(chunk_length, d_model) * 0.02)
            self.type_emb = nn.Parameter(torch.zeros(3, d_model))  # text, image, action query
        self.state_dim = len(state_features)
        if self.state_dim:
            from robot.state import check_state_features

            check_state_features(state_features, "state_features")
            for name, v in (("state_mean", state_mean), ("state_std", state_std)):
                if v is not None and len(v) != self.state_dim:
                    raise ValueError(f"{name}: {len(v)} values for {self.state_dim} state features {list(state_features)}")
            if trunk == "transformer":  # the state token
                self.state_proj = nn.Sequential(nn.Linear(self.state_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
                self.state_type = nn.Parameter(torch.zeros(d_model))
        if fused_token:
            if trunk == "mlp":
                raise ValueError("fused_token: the mlp trunk already fuses the state and the keypoints; set fused_token=false")
            if not keypoints:
                raise ValueError("fused_token: it reads the keypoints; set keypoints > 0")
            # The ManiSkill baselines' fusion: image features and robot state concatenated into one MLP. Reaching
            # needs (object - gripper) position differences; here one layer can form them from the keypoints and
            # the state directly instead of through attention between separate tokens.
            self.fused_proj = nn.Sequential(nn.Linear(self.state_dim + 2 * keypoints + aux_dim * aux_features, 2 * d_model), nn.GELU(),
                                            nn.Linear(2 * d_model, d_model))
        per_token = 2 if action_head == "gaussian" else n_bins
        if trunk == "mlp":
            # The ManiSkill / Levine et al. BC network: one MLP from [normalised state, keypoint (x, y), mean word
            # embedding] straight to all K * D action tokens. Reaching is a near-linear function of (object -
            # gripper) positions; an MLP fits it from these coordinates in a few hundred steps, where the
            # transformer's queries had to learn to route them through attention first (bench/results/sft_recipes.md).
            width = mlp_ratio * d_model
            n_in = self.state_dim + 2 * keypoints * trunk_keypoints + aux_dim * aux_features + d_model
            self.mlp_trunk = nn.Sequential(nn.Linear(n_in, width), nn.GELU(),
                                           nn.Dropout(dropout), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout))
            self.blocks = nn.ModuleList()  # no transformer blocks (FSDP wraps the policy as one unit)
        else:
            self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
            self.ln_f = nn.LayerNorm(d_model)
        if action_head not in ("categorical", "gaussian"):
            raise ValueError(f"action_head: {action_head!r} is not 'categorical' or 'gaussian'")
        # "gaussian": each token's logits are -(c_i - mu)^2 / (2 sigma^2) over the bin centres c_i -- still an
        # exact 256-way categorical (same sampling, log-probs, argmax, ONNX graph), but unimodal and ordinal: its
        # argmax is the bin nearest mu, not whichever single bin holds the most mass. With free logits, a
        # saturated +-1 action (one bin) out-votes a continuous value spread over many bins whenever the policy
        # is unsure, and the greedy policy overshoots. mu beyond [-1, 1] puts the mass on the end bin.
        if trunk == "mlp":
            self.head = nn.Linear(mlp_ratio * d_model, chunk_length * action_dim * per_token)
        else:
            self.head = nn.Linear(d_model, action_dim * per_token)
        self.register_buffer("bin_centres", torch.linspace(-1, 1, n_bins), persistent=False)
        self.apply(self.init_weights)
        self.register_buffer("pixel_mean", torch.tensor(list(image_mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(list(image_std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if self.state_dim:
            mean = list(state_mean) if state_mean is not None else [0.0] * self.state_dim
            std = list(state_std) if state_std is not None else [1.0] * self.state_dim
            self.register_buffer("state_mean_t", torch.tensor(mean, dtype=torch.float32)[None], persistent=False)  # (1, S)
            self.register_buffer("state_std_t", torch.tensor(std, dtype=torch.float32)[None], persistent=False)

    # ------------------------------------------------------------------ the network
    def logits(self, images: torch.Tensor, instruction_tokens: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, H, W, 3) uint8, instruction_tokens (B, L) int64 (0 = padding), states (B, S) float32 (raw
        units; None without a state input) -> logits (B, K * D, V)."""
        return self.logits_and_aux(images, instruction_tokens, states)[0]

    def logits_and_aux(self, images: torch.Tensor, instruction_tokens: torch.Tensor,
                       states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> logits (B, K * D, V) and the auxiliary predictions (B, aux_dim) (None without an aux head)."""
        B, L = instruction_tokens.shape
        aux = kp = None
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (B, 3, H, W)
        x = (x - self.pixel_mean) / self.pixel_std
        if self.config.coord_channels:
            x = torch.cat([x, self.coords.expand(B, -1, -1, -1)], dim=1)  # (B, 5, H, W)
        parts = []
        for i in range(len(self.stages) + 1):
            if i == self.config.keypoint_level and self.config.keypoints:
                # Spatial softmax (Levine et al. 2016): each keypoint channel -> its expected (x, y) position.
                attn = torch.softmax(self.kp_conv(x).flatten(2), dim=-1)  # (B, n_kp, h*w)
                kp = attn @ self.kp_grid  # (B, n_kp, 2) in [-1, 1]
                if self.config.trunk == "transformer":
                    parts.append(self.kp_proj(kp) + self.kp_emb)  # (B, n_kp, d)
                if self.config.aux_dim:
                    aux = self.aux_head(kp.flatten(1))  # (B, aux_dim)
            if i < len(self.stages):
                x = self.stages[i](x)
        z = None
        if self.state_dim:
            if states is None or states.shape != (B, self.state_dim):
                raise PolicyInputError(f"states: this policy takes (B, {self.state_dim}) robot states "
                                       f"{list(self.config.state_features)}, got {None if states is None else tuple(states.shape)}")
            z = (states.to(torch.float32) - self.state_mean_t) / self.state_std_t  # (B, S)
        if self.config.trunk == "mlp":
            words = (instruction_tokens != 0).to(torch.float32)[..., None]  # (B, L, 1)
            txt = (self.word_emb(instruction_tokens) * words).sum(1) / words.sum(1).clamp_min(1.0)  # (B, d) mean word
            kps = [kp.flatten(1)] if self.config.trunk_keypoints else []
            f = torch.cat(([z] if self.state_dim else []) + kps + self._aux_inputs(aux) + [txt], dim=1)  # (B, S [+ 2 n_kp] [+ aux] + d)
            return self._action_logits(self.head(self.mlp_trunk(f)).view(B, self.chunk_length, -1)), aux
        if self.config.patch_tokens:
            parts.insert(0, self.patch_proj(x).flatten(2).transpose(1, 2) + self.image_pos)  # (B, P, d)
        img = torch.cat(parts, dim=1) + self.type_emb[1]  # (B, P + n_kp, d)
        if self.state_dim:
            img = torch.cat([img, (self.state_proj(z) + self.state_type)[:, None]], dim=1)  # (B, P + n_kp + 1, d)
        if self.config.fused_token:
            f = torch.cat(([z] if self.state_dim else []) + [kp.flatten(1)] + self._aux_inputs(aux), dim=1)  # (B, S + 2 n_kp [+ aux])
            img = torch.cat([img, self.fused_proj(f)[:, None]], dim=1)  # (B, ... + 1, d)
        txt = self.word_emb(instruction_tokens) + self.text_pos[:L] + self.type_emb[0]  # (B, L, d)
        qry = (self.queries + self.type_emb[2]).unsqueeze(0).expand(B, -1, -1)  # (B, K, d)
        h = torch.cat([txt, img, qry], dim=1)  # (B, S = L + P + K, d)
        S = h.shape[1]
        # Padding words are never attended to; everything else attends to everything (no causal mask).
        pad = torch.cat([instruction_tokens == 0, torch.zeros(B, S - L, dtype=torch.bool, device=h.device)], dim=1)
        bias = torch.zeros(B, 1, 1, S, device=h.device).masked_fill(pad[:, None, None, :], float("-inf"))
        for block in self.blocks:
            h = block(h, bias)
        return self._action_logits(self.head(self.ln_f(h[:, -self.chunk_length:]))), aux

    def _aux_inputs(self, aux: torch.Tensor | None) -> list[torch.Tensor]:
        """With ``aux_features``: the aux head's predictions as inputs to the actions, gradient stopped. The aux head
        regresses where the object and the gripper are (SFT's MSE); the action loss alone did not teach the trunk to
        read the object's position out of the keypoints (its chunks were shrunk toward zero, bench/results/
        sft_recipes.md), while a small network on the aux predictions fits the reaching actions."""
        return [aux.detach()] if self.config.aux_features else []

    def _action_logits(self, out: torch.Tensor) -> torch.Tensor:
        """The head's output (B, K, D * V) or (B, K, D * 2) -> logits (B, K * D, V), step-major."""
        B = out.shape[0]
        N = self.chunk_length * self.action_dim
        if self.config.action_head == "gaussian":
            mu, log_sigma = out.view(B, N, 2).unbind(-1)  # (B, N) each
            sigma = torch.exp(log_sigma.clamp(-7.0, 2.0))[..., None]
            return -0.5 * ((self.bin_centres - mu[..., None]) / sigma) ** 2  # (B, N, V)
        return out.view(B, N, self.n_bins)

    def greedy_chunk(self, images: torch.Tensor, instruction_tokens: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """The deployed graph: (B, H, W, 3) uint8 + (B, L) int64 [+ (B, S) float32] -> (B, K, D) float32 argmax actions."""
        tokens = self.logits(images, instruction_tokens, states).argmax(-1)  # (B, N)
        at = self.action_tokenizer
        return (at.low + tokens.to(torch.float32) * at.bin_width).view(-1, self.chunk_length, self.action_dim)

    def forward(self, image: torch.Tensor, instruction_tokens: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        return self.greedy_chunk(image, instruction_tokens, states)

    # ------------------------------------------------------------------ the policy interface
    def encode_instructions(self, instructions: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, L) int64 word ids padded with 0 (unknown words: InstructionError)."""
        ids = self.word_tokenizer.encode_batch(instructions, self.config.max_instruction_len)
        return torch.from_numpy(ids).to(self._device())

    def logits_and_aux_from(self, images, instructions, states=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`logits_and_aux` on the policy interface's inputs (checked): (B, H, W, 3) uint8 images, B instructions (or
        one), (B, S) robot states for a state-input policy. What SFT trains and the probes read."""
        imgs = self._images(images, self.image_hw)
        words = self.encode_instructions(self._instructions(instructions, imgs.shape[0]))
        return self.logits_and_aux(imgs, words, self._states(states, imgs.shape[0]))

    def _context_logits(self, images, instructions, states=None) -> torch.Tensor:
        return self.logits_and_aux_from(images, instructions, states)[0]

    @torch.no_grad()
    def sample(self, images, instructions, temperature: float = 1.0, generator: torch.Generator | None = None, states=None):
        t = self._check_temperature(temperature, allow_zero=True)
        logits = self._context_logits(images, instructions, states)  # (B, N, V)
        if t == 0:
            tokens = logits.argmax(-1)
            log_prob = torch.zeros(tokens.shape[0], device=tokens.device)
        else:
            logp = torch.log_softmax(logits / t, dim=-1)
            # Gumbel-max: one independent draw per token from softmax(logits / t).
            # (A generator must live on the policy's device.)
            u = torch.rand(logp.shape, generator=generator, device=logp.device).clamp_min(1e-20)
            tokens = (logp - torch.log(-torch.log(u))).argmax(-1)  # (B, N)
            log_prob = logp.gather(-1, tokens[..., None]).squeeze(-1).sum(-1)
        return self.tokens_to_actions(tokens), tokens, log_prob.float()

    def token_log_probs(self, images, instructions, tokens, temperature: float = 1.0, states=None) -> torch.Tensor:
        t = self._check_temperature(temperature, allow_zero=False)
        logits = self._context_logits(images, instructions, states)
        tok = self._tokens(tokens, logits.shape[0])
        return torch.log_softmax(logits / t, dim=-1).gather(-1, tok[..., None]).squeeze(-1)  # (B, N)

    def entropy(self, images, instructions, tokens=None, temperature: float = 1.0, states=None) -> torch.Tensor:
        t = self._check_temperature(temperature, allow_zero=False)
        logp = torch.log_softmax(self._context_logits(images, instructions, states) / t, dim=-1)
        return -(logp.exp() * logp).sum(-1)  # (B, N)

    # ------------------------------------------------------------------ helpers
    @property
    def default_instruction(self) -> str:
        if not self.config.instructions:
            raise PolicyInputError("this policy was saved without a training instruction; pass one explicitly")
        return self.config.instructions[0]

    def num_parameters_m(self) -> float:
        return sum(p.numel() for p in self.parameters()) / 1e6

    @staticmethod
    @torch.no_grad()
    def init_weights(module: nn.Module) -> None:
        """GPT-2 style initialisation (small normal weights) for linear and embedding layers."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
