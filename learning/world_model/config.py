"""Typed configs of the world model (architecture) and of its training, validated on construction.

The architecture config is what a checkpoint stores (``config.json`` of the model folder); loading a checkpoint
under a different architecture config is refused with the differing fields named (`config_mismatch`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from robot.config_dict import dataclass_from_dict
from robot.state import DEFAULT_POLICY_STATE, check_state_features

# The tiny Cosmos transformer that trains on a 2-core CPU in minutes. Same class as the 2B model
# (diffusers.CosmosTransformer3DModel); only the sizes differ. in/out channels are derived from the codec, and
# max_size (when absent) from the latent size, so they are not listed here.
TINY_TRANSFORMER: dict[str, Any] = {
    "num_attention_heads": 4,
    "attention_head_dim": 32,  # hidden 128
    "num_layers": 4,
    "mlp_ratio": 4.0,
    "text_embed_dim": 64,
    "adaln_lora_dim": 64,
    "patch_size": [1, 4, 4],  # on the 16x16 patch latent: 4x4 tokens per frame (16x16 px each)
    "rope_scale": [1.0, 1.0, 1.0],
    # True (the real checkpoints') adds an all-zero padding-mask channel; the tiny model does not need it.
    "concat_padding_mask": False,
    "extra_pos_embed_type": "learnable",
}

CODECS = ("patch", "wan")
PREDICTIONS = ("x0", "velocity")


@dataclass(frozen=True)
class WorldModelConfig:
    """Architecture of the action-conditioned world model (all sizes; nothing about training)."""

    image_size: int = 64  # px, square frames (H = W)
    chunk: int = 8  # K: actions per step = frames predicted per call
    n_cond: int = 1  # conditioning frames kept clean
    action_dim: int = 7
    codec: str = "patch"  # "patch": pixel-unshuffle latent (lossless, free); "wan": AutoencoderKLWan
    patch_factor: int = 4  # patch codec: 64x64x3 frames -> (3*f*f, 64/f, 64/f) latents
    patch_frames: int = 2  # patch codec: frames stacked per latent frame (temporal compression; halves the tokens)
    patch_scale: float = 2.0  # patch codec: latents = (pixels/127.5 - 1) * scale (unit-ish variance)
    transformer_kwargs: dict = field(default_factory=lambda: dict(TINY_TRANSFORMER))  # CosmosTransformer3DModel kwargs
    vae_kwargs: dict | None = None  # AutoencoderKLWan kwargs (codec "wan")
    text_vocab: int = 4096  # hashed-word instruction encoder
    text_len: int = 16
    action_hidden: int = 256
    # Also give each latent frame the running sum of the chunk's translation commands up to it: where the arm should be
    # relative to the conditioning frame, which a frame's own deltas alone do not say (the tiny model, given only
    # the deltas, barely moved the arm differently for mirrored xy commands: bench/results/wm_levers.md).
    action_cumulative: bool = False
    reward_head: bool = True
    reward_hidden: int = 128
    # The robot state a state-input policy takes (robot/state.py names), predicted per generated frame by the state
    # head as its change since the conditioning frame, so the policy acts in imagination on the inputs it gets on the
    # robot; () = no state head.
    state_features: tuple[str, ...] = DEFAULT_POLICY_STATE
    state_hidden: int = 128
    prediction: str = "x0"  # what the transformer outputs: "x0" (clean latents; tiny patch model) or "velocity" (Cosmos 2B)
    residual: bool = True  # x0 models: predict the change from the last conditioning frame (most of the scene holds still)
    cond_concat: bool = False  # patch codec: also concatenate the last conditioning frame to every latent frame's channels
    t_cond: float = 1e-4  # noise level given to the clean conditioning frames (Cosmos: sigma_cond / (1 + sigma_cond))
    timestep_scale: float = 1000.0  # t in [0, 1] is multiplied by this before the sinusoidal embedding
    rope_fps: float | None = None  # fps given to Cosmos' RoPE (None: frame index, as for images)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"world model config: {name}: {why}")

        # a StateSpecError (a ValueError) names an unknown feature; a list from config.json becomes a tuple
        object.__setattr__(self, "state_features", check_state_features(self.state_features, "world model config: state_features"))
        if self.prediction not in PREDICTIONS:
            raise bad("prediction", f"{self.prediction!r} is not one of {PREDICTIONS}")
        if self.cond_concat and self.codec != "patch":
            raise bad("cond_concat", "needs the patch codec (frame-aligned latents)")
        if self.residual and (self.prediction != "x0" or self.codec != "patch"):
            raise bad("residual", "a residual on the last frame needs prediction 'x0' and the patch codec (frame-aligned latents)")
        if self.codec not in CODECS:
            raise bad("codec", f"{self.codec!r} is not one of {CODECS}")
        for name in ("image_size", "chunk", "n_cond", "action_dim", "patch_factor", "patch_frames", "text_vocab", "text_len", "action_hidden", "reward_hidden", "state_hidden"):
            if int(getattr(self, name)) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.t_cond < 0.1:
            raise bad("t_cond", f"must be in [0, 0.1), got {self.t_cond}")
        if self.timestep_scale <= 0:
            raise bad("timestep_scale", f"must be > 0, got {self.timestep_scale}")
        tr = dict(self.transformer_kwargs)
        for k in ("in_channels", "out_channels"):
            if k in tr:
                raise bad(f"transformer_kwargs.{k}", "is derived from the codec (latent channels + 1 condition-mask channel); remove it")
        patch = list(tr.get("patch_size", [1, 2, 2]))
        if patch[0] != 1:
            raise bad("transformer_kwargs.patch_size", f"temporal patch must be 1 (one timestep and one action embedding per latent frame), got {patch}")
        if self.codec == "patch":
            if self.image_size % self.patch_factor:
                raise bad("patch_factor", f"{self.patch_factor} does not divide image_size {self.image_size}")
            if self.chunk % self.patch_frames:
                raise bad("chunk", f"the patch codec stacks {self.patch_frames} frames per latent frame: chunk {self.chunk} must be a multiple")
            lat = self.image_size // self.patch_factor
        else:
            if self.vae_kwargs is None:
                raise bad("vae_kwargs", "codec 'wan' needs the AutoencoderKLWan kwargs (or use WorldModel.from_cosmos)")
            if self.n_cond != 1:
                raise bad("n_cond", f"codec 'wan' encodes the first frame alone (causal VAE): n_cond must be 1, got {self.n_cond}")
            if self.chunk % self.temporal_factor:
                raise bad("chunk", f"codec 'wan' compresses time by {self.temporal_factor}: chunk {self.chunk} must be a multiple")
            if self.image_size % self.spatial_factor:
                raise bad("image_size", f"must be a multiple of the VAE's spatial factor {self.spatial_factor}")
            lat = self.image_size // self.spatial_factor
        if lat % patch[1] or lat % patch[2]:
            raise bad("transformer_kwargs.patch_size", f"{patch} does not divide the {lat}x{lat} latent")

    # ---------------------------------------------------------------- derived sizes
    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame (after the first)."""
        if self.codec == "patch":
            return self.patch_frames
        return 2 ** sum(bool(x) for x in (self.vae_kwargs or {}).get("temperal_downsample", [False, True, True]))

    @property
    def spatial_factor(self) -> int:
        if self.codec == "patch":
            return self.patch_factor
        return 2 ** len((self.vae_kwargs or {}).get("temperal_downsample", [False, True, True]))

    @property
    def latent_channels(self) -> int:
        return 3 * self.patch_factor**2 * self.patch_frames if self.codec == "patch" else int((self.vae_kwargs or {}).get("z_dim", 16))

    @property
    def latent_size(self) -> int:
        return self.image_size // self.spatial_factor

    @property
    def cond_latent_frames(self) -> int:
        return -(-self.n_cond // self.patch_frames) if self.codec == "patch" else 1  # ceil

    @property
    def pred_latent_frames(self) -> int:
        return self.chunk // self.temporal_factor

    @property
    def hidden_size(self) -> int:
        tr = self.transformer_kwargs
        return int(tr.get("num_attention_heads", 32)) * int(tr.get("attention_head_dim", 128))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as config.json stores them

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldModelConfig":
        return dataclass_from_dict(cls, d, "world model config")


def config_mismatch(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Fields whose values differ between two (JSON-normalised) config dicts, as 'name: a != b' strings."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_mismatch(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} != {vb!r}")
    return out


@dataclass(frozen=True)
class TrainConfig:
    """How the world model is trained (or refined from a previous checkpoint)."""

    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995  # EMA of the weights; the checkpoint's model/ folder holds the EMA weights
    reward_weight: float = 1.0  # lambda_0 in lambda(t) = lambda_0 * (1 - t)
    state_weight: float = 1.0  # mu in L = L_flow + lambda(t) L_reward + mu L_state (a model with a state head)
    t_shift: float = 1.0  # noise levels t ~ U(0, 1) shifted to s t / (1 + (s - 1) t): s > 1 trains more at high noise
    cond_noise: float = 0.0  # max noise level added to the conditioning latents (robustness to own frames)
    # Share of the training windows whose conditioning frame the model generates itself, from the previous window's
    # real frame and actions, as imagination does (self-forcing): frames and reward head then also learn from the
    # drifted frames they condition on in a rollout, not only from real ones. own_frames_steps: its Euler steps.
    own_frames: float = 0.0
    own_frames_steps: int = 2
    outcomes: tuple[str, ...] = ("success", "near_success", "failure")  # which episodes train (ablation: drop near_success)
    balance_outcomes: bool = True  # each outcome present gets an equal share of every batch (per store)
    mix: tuple[float, ...] | None = None  # batch share per store (refinement: old SANS, new rollouts); None = by size
    max_minutes: float | None = None  # stop early (and checkpoint) after this wall time
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    device: str = "auto"  # "auto": cuda when present; bf16 autocast on GPU, fp32 on CPU
    threads: int | None = None  # torch CPU threads (None: torch's default). 1 is far faster on a CPU shared with
    # other busy processes: OpenMP's barriers then stall every small elementwise op (measured 15x on a mul).

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"train config: {name}: {why}")

        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise bad("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.t_shift <= 0:
            raise bad("t_shift", f"must be > 0, got {self.t_shift}")
        if self.reward_weight < 0 or self.state_weight < 0 or self.cond_noise < 0 or self.warmup_steps < 0:
            raise bad("reward_weight/state_weight/cond_noise/warmup_steps", "must be >= 0")
        if not 0.0 <= self.own_frames <= 1.0 or self.own_frames_steps < 1:
            raise bad("own_frames/own_frames_steps", f"need a share in [0, 1] and >= 1 step, got {self.own_frames}/{self.own_frames_steps}")
        known = ("success", "near_success", "failure", "unlabeled")
        if not self.outcomes or any(o not in known for o in self.outcomes):
            raise bad("outcomes", f"must be a non-empty subset of {known}, got {list(self.outcomes)}")
        if self.mix is not None and (not self.mix or any(m < 0 for m in self.mix) or sum(self.mix) <= 0):
            raise bad("mix", f"must be non-negative batch shares with a positive sum, got {list(self.mix)}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise bad("max_minutes", f"must be > 0 or null, got {self.max_minutes}")
        if self.threads is not None and self.threads < 1:
            raise bad("threads", f"must be >= 1 or null, got {self.threads}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise bad("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return dataclass_from_dict(cls, d, "train config")
