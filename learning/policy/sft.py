"""Supervised fine-tuning (behaviour cloning) of a VLA on the episodes of a store.

One sample = the frame at step t + the episode's instruction -> the K actions commanded at t .. t+K-1
(`learning.data.windows`: past the episode's end the chunk holds still, the physically right continuation).
The loss is the negative log-likelihood of the action tokens, ``-token_log_probs(...).mean()``: the same
primitive GRPO later differentiates, so any policy that implements the interface (the compact VLA, the
Hugging Face adapter) trains with this one loop.

The default preset (all successes of the store, 2000 steps) is the best of the configurations tried on this
CPU; its success rate on PickCube, and why it is low, are in README.md (section "Train, deploy and evaluate
the policy"). Output folder::

    out/policy/                      the final policy (save_pretrained; `load_policy` reads it)
    out/checkpoints/step-NNNNNN/     policy + training_state.pt (optimizer, step, RNG) -- resumable
    out/metrics.jsonl                losses/train, losses/val, charts/lr per logged step
    out/sft_summary.json             episodes used, final losses, timing
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from learning.data.store import EpisodeStore
from learning.data.windows import WindowDataset, WindowSpec
from learning.distributed import Dist, current, distributed_session, wrap_policy
from learning.policy.compact import CompactModelConfig
from robot.config_dict import dataclass_from_dict
from robot.console import print_table
from robot.episode import OUTCOMES
from robot.state import DEFAULT_POLICY_STATE, check_state_features, state_matrix

log = logging.getLogger(__name__)

POLICY_KINDS = ("compact", "hf")
# SFT targets: the step column each one reads (`WindowSpec.action_column`).
ACTION_LABELS = {"action": "action", "commanded": "extras.action_commanded", "expert_action": "extras.expert_action"}


@dataclass(frozen=True)
class HFConfig:
    path: str | None = None  # local folder of a transformers image-text-to-text model (+ its processor)
    prompt: str = "In: What action should the robot take to {instruction}?{state}\nOut:"


@dataclass(frozen=True)
class SFTConfig:
    store: str
    out: str
    outcomes: tuple[str, ...] = ("success",)  # which episodes count as demonstrations
    max_episodes: int | None = None  # training demos (None = all that match, less val_episodes)
    val_episodes: int = 3  # held-out episodes of the same outcomes for the validation loss
    chunk_length: int = 8  # K
    camera: str | None = None  # None = the first camera of each episode
    state_features: tuple[str, ...] = DEFAULT_POLICY_STATE  # robot.state features the policy takes; () = image only
    steps: int = 2000
    batch_size: int = 32
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    augment_shift: int = 0  # px of random shift augmentation (DrQ); 0 = off (it moves the cube against absolute targets)
    aux_weight: float = 1.0  # compact VLA: weight of the auxiliary gripper-position loss (0 = off), see aux_targets
    action_labels: str = "action"  # "action" (executed) | "commanded" (before the safety filter) | "expert_action" (a noisy expert's noise-free labels)
    mean_action_weight: float = 0.0  # compact VLA: weight of an MSE between the expected action (under the bin
    # distribution) and the demonstrated one: an ordinal signal that punishes a chunk shrunk toward zero; 0 = off
    label_sigma_bins: float = 0.0  # compact VLA: train on a Gaussian over neighbouring bins (this std, in bins); 0 = one-hot
    end_hold_windows: int = 0  # copies per demo of a window at its last frame whose chunk is all hold (WindowSpec)
    seed: int = 0
    log_every: int = 50
    val_every: int = 500
    checkpoint_every: int = 500
    resume: bool = True  # continue from the newest checkpoint in out/checkpoints
    threads: int = 1  # torch CPU threads (0 = torch's default): on a shared 2-core CPU, 2 threads ran 10x slower
    policy: str = "compact"
    # Fine-tuning: start from this policy folder (save_pretrained) instead of a fresh policy -- its architecture,
    # normalisation statistics and instruction vocabulary are kept (model / hf keys are then unused)
    init_from: str | None = None
    # more stores whose ``outcomes`` episodes are trained on too, all of them (max_episodes / val_episodes apply to
    # ``store`` only): e.g. the loop's real rollouts beside the SANS demos (the filtered-BC control, learning/controls.py)
    extra_stores: tuple[str, ...] = ()
    model: CompactModelConfig = field(default_factory=CompactModelConfig)
    hf: HFConfig = field(default_factory=HFConfig)

    def __post_init__(self) -> None:
        bad = [o for o in self.outcomes if o not in OUTCOMES]
        if bad or not self.outcomes:
            raise ValueError(f"outcomes: {list(self.outcomes)} must be a non-empty subset of {list(OUTCOMES)}")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes: must be >= 1 or null, got {self.max_episodes}")
        for name in ("chunk_length", "steps", "batch_size", "log_every", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight: must be >= 0, got {self.aux_weight}")
        if self.action_labels not in ACTION_LABELS:
            raise ValueError(f"action_labels: {self.action_labels!r} is not one of {list(ACTION_LABELS)}")
        if self.mean_action_weight < 0:
            raise ValueError(f"mean_action_weight: must be >= 0, got {self.mean_action_weight}")
        if self.mean_action_weight > 0 and self.policy != "compact":
            raise ValueError(f"mean_action_weight: the expected action needs the compact VLA's logits; policy={self.policy!r}")
        if self.label_sigma_bins < 0:
            raise ValueError(f"label_sigma_bins: must be >= 0, got {self.label_sigma_bins}")
        if self.label_sigma_bins > 0 and self.policy != "compact":
            raise ValueError(f"label_sigma_bins: Gaussian bin targets need the compact VLA's logits; policy={self.policy!r}")
        for name in ("val_episodes", "warmup_steps", "augment_shift", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"policy: {self.policy!r} is not one of {POLICY_KINDS}")
        check_state_features(self.state_features, "state_features")
        if self.policy == "hf" and not self.hf.path:
            raise ValueError("hf.path: policy=hf needs the local folder of a transformers image-text-to-text model")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SFTConfig":
        d = dict(d)
        for k in ("outcomes", "state_features", "extra_stores"):  # one name may be given alone
            if isinstance(d.get(k), str):
                d[k] = (d[k],)
            elif k in d and d[k] is None:
                d[k] = ()
        if "model" in d and not isinstance(d["model"], CompactModelConfig):
            d["model"] = dataclass_from_dict(CompactModelConfig, d["model"], "model")
        if "hf" in d and not isinstance(d["hf"], HFConfig):
            d["hf"] = dataclass_from_dict(HFConfig, d["hf"], "hf")
        return dataclass_from_dict(cls, d, "sft config")


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Demos:
    """Windows of the selected episodes, in memory: images (N, H, W, 3) uint8, chunks (N, K, 7), instructions,
    states (N, S) float32 (the robot state at each window's frame, `robot.state` features; S = 0 without);
    ``camera_info``: the episodes' common camera framing (Episode.info["camera"]) or None if unrecorded."""

    images: np.ndarray
    chunks: np.ndarray
    instructions: list[str]
    episodes: list[int]
    states: np.ndarray
    camera_info: dict[str, Any] | None = None
    aux: np.ndarray | None = None  # (N, AUX_DIM) float32, see aux_targets

    def __len__(self) -> int:
        return len(self.images)


AUX_DIM = 10


def aux_targets(ee_pose: np.ndarray, gripper: np.ndarray, actions: np.ndarray, t: int) -> np.ndarray:
    """Training-only targets that say what the actions depend on and that the frame at t shows, from the robot's
    own recorded state: the gripper's position and opening at t, where the object is at t (where the gripper
    first closed on it while t is before that step -- the object still rests there -- and the gripper's own
    position from then on, with the object in the hand; the last step if it never closed) and where the episode
    ended (for a success: at the goal). (AUX_DIM,) float32. The policy does not see them; they only shape its
    keypoints during SFT. Each is visible in the frame at t: the grasp point stops being so once the object has
    moved (bench/sft_probe.py localiser)."""
    closes = np.flatnonzero(actions[:, 6] < 0)
    first_close = int(closes[0]) if closes.size else len(ee_pose) - 1
    obj = ee_pose[first_close, :3] if t < first_close else ee_pose[t, :3]
    return np.concatenate([ee_pose[t, :3], [gripper[t]], obj, ee_pose[-1, :3]]).astype(np.float32)


def load_demos(store: EpisodeStore, indices: list[int], chunk_length: int, camera: str | None,
               state_features: tuple[str, ...] = DEFAULT_POLICY_STATE, action_labels: str = "action",
               end_hold_windows: int = 0) -> Demos:
    spec = WindowSpec(chunk=chunk_length, n_cond=1, camera=camera, action_column=ACTION_LABELS[action_labels],
                      end_hold_windows=end_hold_windows)
    ds = WindowDataset(store, spec, indices=indices)
    b = ds.batch(np.arange(len(ds)))
    task_of = dict(zip(ds.episode_indices, ds.tasks))
    cams = {json.dumps(json.loads(store.row(i)["info_json"]).get("camera"), sort_keys=True) for i in indices}
    if len(cams) > 1:
        raise ValueError(f"episodes {indices} were recorded with {len(cams)} different camera framings "
                         f"(info.camera); train on one framing (select episodes of one rig)")
    state = {}
    for i in indices:
        t = store.step_table(i, ["observation.ee_pose", "observation.gripper", "action"])
        state[i] = [np.asarray(t.column(c).to_pylist(), np.float32) for c in ("observation.ee_pose", "observation.gripper", "action")]
    aux = np.stack([aux_targets(*state[int(e)], int(t)) for e, t in zip(b["episode"], b["t"])])
    states = np.stack([state_matrix(state_features, state[int(e)][0][t], state[int(e)][1][t])[0] for e, t in zip(b["episode"], b["t"])])
    return Demos(images=b["cond"][:, -1], chunks=b["actions"], instructions=[task_of[int(e)] for e in b["episode"]],
                 episodes=list(indices), states=states, camera_info=json.loads(cams.pop()) if cams else None, aux=aux)


def concat_demos(parts: list[Demos]) -> Demos:
    """The windows of several stores' demos as one set (one camera framing: refused otherwise)."""
    cams = {json.dumps(p.camera_info, sort_keys=True) for p in parts if p.camera_info is not None}
    if len(cams) > 1:
        raise ValueError(f"extra_stores: the stores were recorded with {len(cams)} different camera framings (info.camera); "
                         "train on one framing")
    aux = [p.aux for p in parts]
    return Demos(images=np.concatenate([p.images for p in parts]), chunks=np.concatenate([p.chunks for p in parts]),
                 instructions=[x for p in parts for x in p.instructions], episodes=[e for p in parts for e in p.episodes],
                 states=np.concatenate([p.states for p in parts]), camera_info=json.loads(cams.pop()) if cams else None,
                 aux=None if any(a is None for a in aux) else np.concatenate(aux))


def select_episodes(store: EpisodeStore, cfg: SFTConfig) -> tuple[list[int], list[int]]:
    """(train, val) episode indices: a seeded shuffle of the matching episodes; val comes after train."""
    idx = store.indices(outcomes=tuple(cfg.outcomes))
    if not idx:
        have = store.info.get("wvl", {}).get("outcomes", {})
        raise ValueError(f"outcomes: no {list(cfg.outcomes)} episodes in {store.root} (it has {have or 'no episodes'})")
    idx = [int(i) for i in np.random.default_rng(cfg.seed).permutation(idx)]
    n_val = max(0, min(cfg.val_episodes, len(idx) - 1))
    n_train = min(cfg.max_episodes or len(idx), len(idx) - n_val)
    train, val = sorted(idx[:n_train]), sorted(idx[n_train:n_train + n_val])
    if n_val < cfg.val_episodes:
        log.warning("only %d episode(s) match; validating on %d instead of val_episodes=%d", len(idx), n_val, cfg.val_episodes)
    elif n_train <= n_val:
        log.warning("training on only %d episode(s): %d match %s and val_episodes=%d are held out for validation "
                    "(collect more, or lower val_episodes)", n_train, len(idx), list(cfg.outcomes), n_val)
    return train, val


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """DrQ augmentation: pad by edge replication, crop back at a random offset. (B, H, W, 3) uint8."""
    if pad == 0:
        return images
    B, H, W, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, B))
    return np.stack([padded[b, dy[b]:dy[b] + H, dx[b]:dx[b] + W] for b in range(B)])


# ---------------------------------------------------------------------------------------------- model
def build_policy(cfg: SFTConfig, demos: Demos):
    """A fresh policy with its normalisation statistics and instruction vocabulary taken from ``demos``."""
    instructions = list(dict.fromkeys(demos.instructions))  # unique, in order of first appearance
    if cfg.policy == "hf":
        from learning.policy.hf_vla import HFVLA

        return HFVLA.from_pretrained(cfg.hf.path, chunk_length=cfg.chunk_length, prompt=cfg.hf.prompt,
                                     instructions=instructions, state_features=list(cfg.state_features))
    from learning.policy.compact import CompactVLA
    from learning.policy.tokenizers import WordTokenizer

    px = demos.images.reshape(-1, 3).astype(np.float64) / 255.0
    a = demos.chunks.reshape(-1, demos.chunks.shape[-1])
    H = demos.images.shape[1]
    if demos.images.shape[1] != demos.images.shape[2]:
        raise ValueError(f"images: the compact VLA takes square frames, the store has {demos.images.shape[1:3]}")
    m = cfg.model
    return CompactVLA(
        vocab=WordTokenizer.build(instructions).vocab, image_size=H, chunk_length=cfg.chunk_length, action_dim=a.shape[1],
        **{**asdict(m), "conv_channels": list(m.conv_channels)},
        image_mean=px.mean(0).tolist(), image_std=np.maximum(px.std(0), 1e-3).tolist(),
        aux_dim=AUX_DIM if cfg.aux_weight > 0 and m.keypoints > 0 else 0,
        camera=cfg.camera or "front", instructions=instructions, camera_info=demos.camera_info,
        state_features=list(cfg.state_features), state_mean=demos.states.mean(0).tolist() if cfg.state_features else None,
        state_std=np.maximum(demos.states.std(0), 1e-3).tolist() if cfg.state_features else None,
        action_stats={"min": a.min(0).tolist(), "max": a.max(0).tolist(), "mean": a.mean(0).tolist(), "std": a.std(0).tolist()},
    )


def init_policy(cfg: SFTConfig):
    """The policy in ``cfg.init_from``, to fine-tune; refused when its chunk length or state input differ from cfg's."""
    from learning.policy import load_policy

    if not Path(cfg.init_from).exists():
        raise ValueError(f"init_from: no policy folder {cfg.init_from}")
    policy = load_policy(cfg.init_from)
    have = (policy.chunk_length, tuple(policy.state_features or ()))
    if have != (cfg.chunk_length, tuple(cfg.state_features)):
        raise ValueError(f"init_from: {cfg.init_from} has chunk_length {have[0]} and state_features {list(have[1])}; "
                         f"this config asks for {cfg.chunk_length} and {list(cfg.state_features)}")
    log.info("fine-tuning %s", cfg.init_from)
    return policy


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _states_or_none(policy, states: np.ndarray | None) -> np.ndarray | None:
    return states if policy.state_features else None


def sft_loss(policy, images: np.ndarray, instructions: list[str], chunks: np.ndarray,
             states: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-token NLL of the demonstrated chunk, and the mean probability given to the demonstrated token."""
    tokens = policy.actions_to_tokens(chunks)  # (B, K * D)
    logp = policy.token_log_probs(images, instructions, tokens, states=_states_or_none(policy, states))  # (B, K * D)
    return -logp.mean(), logp.detach().exp().mean()


def sft_aux_loss(policy, images: np.ndarray, instructions: list[str], chunks: np.ndarray,
                 aux: np.ndarray | None, states: np.ndarray | None = None,
                 label_sigma_bins: float = 0.0, mean_action_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The compact VLA (one forward pass): (training loss on the action tokens, NLL, mean target probability, MSE
    of the normalised aux targets; 0 without ``aux``). The NLL is the same number `sft_loss` computes.

    With ``label_sigma_bins`` > 0 the action loss is the cross-entropy against a Gaussian over the bins around the
    demonstrated one: neighbouring bins are neighbouring actions, which one-hot targets do not say, so a small
    data set teaches a 256-way head to regress (the greedy action is still the argmax bin)."""
    logits, pred = policy.logits_and_aux_from(images, instructions, _states_or_none(policy, states))
    tokens = policy.actions_to_tokens(chunks).to(logits.device)
    logp_all = torch.log_softmax(logits, dim=-1)  # (B, K * D, V)
    logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)  # (B, K * D)
    nll = -logp.mean()
    loss = nll
    if label_sigma_bins > 0:
        bins = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
        target = torch.softmax(-0.5 * ((bins - tokens[..., None]) / label_sigma_bins) ** 2, dim=-1)  # (B, K * D, V)
        loss = -(target * logp_all).sum(-1).mean()
    if mean_action_weight > 0:
        # The expected action under each token's distribution against the demonstrated one: one-hot targets say
        # nothing about how far off a wrong bin is; this term does, and grows with the distance.
        expected = (logp_all.exp() * policy.bin_centres).sum(-1)  # (B, K * D)
        demo = torch.as_tensor(np.asarray(chunks), dtype=torch.float32, device=logits.device).reshape(expected.shape)
        loss = loss + mean_action_weight * torch.mean((expected - demo) ** 2)
    mse = torch.zeros((), device=logits.device)
    if aux is not None and pred is not None:
        mse = torch.mean((pred - torch.as_tensor(aux, device=pred.device)) ** 2)
    return loss, nll, logp.detach().exp().mean(), mse


@torch.no_grad()
def validation_loss(policy, demos: Demos, batch_size: int) -> dict[str, float]:
    was_training = policy.training
    policy.eval()
    total, n, exact = 0.0, 0, 0.0
    for s in range(0, len(demos), batch_size):
        sl = slice(s, s + batch_size)
        tokens = policy.actions_to_tokens(demos.chunks[sl])
        st = _states_or_none(policy, demos.states[sl])
        logp = policy.token_log_probs(demos.images[sl], demos.instructions[sl], tokens, states=st)
        greedy = policy.actions_to_tokens(policy.act(demos.images[sl], demos.instructions[sl], states=st))
        total += float(-logp.sum())
        exact += float((greedy == tokens.to(greedy.device)).float().sum())
        n += logp.numel()
    policy.train(was_training)
    return {"losses/val_nll": total / n, "charts/val_token_accuracy": exact / n}


# ---------------------------------------------------------------------------------------------- training
def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*"))


def _save_checkpoint(out: Path, policy, opt: torch.optim.Optimizer, step: int, rng: np.random.Generator, cfg: SFTConfig,
                     dist: Dist | None = None) -> Path:
    """Every rank calls it (a sharded policy's full state is gathered); rank 0 writes, in the single-process format."""
    dist = dist or Dist()
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.save_pretrained(policy, tmp)
    opt_state = dist.optimizer_state(policy, opt)
    if not dist.is_main:
        return final
    torch.save({"optimizer": opt_state, "step": step, "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "config": _cfg_dict(cfg)}, tmp / "training_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # a checkpoint folder exists only when complete
    for old in _checkpoints(out)[:-2]:  # keep the two newest
        shutil.rmtree(old, ignore_errors=True)
    return final


def _cfg_dict(cfg: SFTConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["outcomes"] = list(d["outcomes"])
    d["state_features"] = list(d["state_features"])
    d["extra_stores"] = list(d["extra_stores"])
    d["model"]["conv_channels"] = list(d["model"]["conv_channels"])
    return d


def _resume_mismatch(saved: dict[str, Any] | None, cfg: SFTConfig) -> list[str]:
    """The architecture fields (policy kind, chunk length, model / hf settings) that differ between a checkpoint's
    recorded config and ``cfg``, as "field: saved != requested" (fields a checkpoint did not record are not compared)."""
    if not saved:
        return []
    want = _cfg_dict(cfg)
    diff = [f"{k}: {saved[k]!r} != {want[k]!r}" for k in ("policy", "chunk_length", "state_features") if k in saved and saved[k] != want[k]]
    section = "model" if cfg.policy == "compact" else "hf"
    for k, v in (saved.get(section) or {}).items():
        if k in want[section] and v != want[section][k]:
            diff.append(f"{section}.{k}: {v!r} != {want[section][k]!r}")
    return diff


def train_sft(cfg: SFTConfig | DictConfig | dict, store: EpisodeStore | str | Path | None = None, dist: Dist | None = None) -> Path:
    """Behaviour-clone a policy on ``store`` (default: ``cfg.store``); returns the final policy folder.

    ``dist`` (default: the context `init_distributed` set up): under torchrun each rank trains on its
    ``batch_size / world_size`` rows of every global batch with the policy sharded by FSDP2; only rank 0 writes."""
    from learning.policy import load_policy

    if not isinstance(cfg, SFTConfig):
        cfg = SFTConfig.from_dict(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg)
    if not isinstance(store, EpisodeStore):
        store = EpisodeStore(store or cfg.store, create=False)
    dist = dist or current()
    rows = dist.rows(cfg.batch_size, "batch_size")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    train_idx, val_idx = select_episodes(store, cfg)
    t0 = time.perf_counter()
    train = load_demos(store, train_idx, cfg.chunk_length, cfg.camera, cfg.state_features, cfg.action_labels, cfg.end_hold_windows)
    val = load_demos(store, val_idx, cfg.chunk_length, cfg.camera, cfg.state_features, cfg.action_labels) if val_idx else None
    extra_idx: dict[str, list[int]] = {}
    for path in cfg.extra_stores:  # every matching episode of each extra store trains (none is held out)
        extra = EpisodeStore(path, create=False)
        extra_idx[str(extra.root)] = idx = extra.indices(outcomes=tuple(cfg.outcomes))
        if idx:
            train = concat_demos([train, load_demos(extra, idx, cfg.chunk_length, cfg.camera, cfg.state_features, cfg.action_labels,
                                                    cfg.end_hold_windows)])
        else:
            log.info("extra store %s: no %s episodes", extra.root, list(cfg.outcomes))
    log.info("SFT on %d episodes (%d windows), validating on %d episodes; data loaded in %.1f s",
             len(train_idx) + sum(map(len, extra_idx.values())), len(train), len(val_idx), time.perf_counter() - t0)

    step = 0
    ckpts = _checkpoints(out) if cfg.resume else []
    if ckpts:
        policy = load_policy(ckpts[-1])
        state = torch.load(ckpts[-1] / "training_state.pt", weights_only=False)
        diff = _resume_mismatch(state.get("config"), cfg)
        if diff:
            raise ValueError(f"{ckpts[-1]}: cannot resume, the checkpoint was made with another policy config ({'; '.join(diff)}; "
                             f"checkpoint != requested); choose another out= or resume=false")
        step = int(state["step"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming from %s (step %d)", ckpts[-1], step)
    elif cfg.init_from:
        policy = init_policy(cfg)
    else:
        policy = build_policy(cfg, train)
    if dist.initialized:
        policy.to(dist.device)
    policy.train()
    wrap_policy(dist, policy)  # FSDP2 under torchrun; nothing on one process
    decay = [p for n, p in policy.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in policy.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    if ckpts:
        dist.load_optimizer_state(policy, opt, state["optimizer"])

    use_aux = getattr(getattr(policy, "config", None), "aux_dim", 0) > 0 and cfg.aux_weight > 0 and train.aux is not None
    aux_mean, aux_std = (train.aux.mean(0), train.aux.std(0) + 1e-3) if use_aux else (None, None)
    metrics_f = open(out / "metrics.jsonl", "a") if dist.is_main else None
    last: dict[str, float] = {}
    t_train = time.perf_counter()
    with dist.progress() as bar:
        job = bar.add_task("sft", total=cfg.steps, completed=step, status="")
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            b = rng.integers(0, len(train), size=cfg.batch_size)
            images = random_shift(train.images[b], cfg.augment_shift, rng)
            b, images = b[rows], images[rows]  # this rank's rows of the global batch (every rank draws all of it)
            instr = [train.instructions[i] for i in b]
            if use_aux or cfg.label_sigma_bins > 0 or cfg.mean_action_weight > 0:
                action_loss, nll, acc, aux_mse = sft_aux_loss(
                    policy, images, instr, train.chunks[b], (train.aux[b] - aux_mean) / aux_std if use_aux else None,
                    train.states[b], cfg.label_sigma_bins, cfg.mean_action_weight)
                loss = action_loss + cfg.aux_weight * aux_mse
            else:
                loss, acc = sft_loss(policy, images, instr, train.chunks[b], train.states[b])
                nll = loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            row: dict[str, float] = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                m = dist.mean({"nll": nll, "acc": acc, **({"aux": aux_mse} if use_aux else {})})  # over the global batch
                if use_aux:
                    row["losses/train_aux_mse"] = m["aux"].item()
                row.update({"losses/train_nll": m["nll"].item(), "charts/train_target_prob": m["acc"].item(),
                            "charts/lr": lr, "charts/grad_norm": float(gnorm)})
            if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                row.update(validation_loss(policy, val, 2 * cfg.batch_size))
            if row and metrics_f:
                last.update(row)
                metrics_f.write(json.dumps({"step": step, **row}) + "\n")
                metrics_f.flush()
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                _save_checkpoint(out, policy, opt, step, rng, cfg, dist)
            bar.update(job, advance=1, status=" ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in last.items() if "nll" in k))
    elapsed = time.perf_counter() - t_train

    final = out / "policy"
    tmp = out / ".policy.tmp"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # a stale one from an interrupted run
    dist.save_pretrained(policy, tmp)  # every rank (gathers a sharded policy); rank 0 writes
    if not dist.is_main:
        dist.barrier()  # rank 0 finishes writing before anyone returns
        return final
    metrics_f.close()
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    summary = {"policy": str(final), "store": str(store.root), "train_episodes": train_idx, "val_episodes": val_idx,
               "extra_train_episodes": extra_idx, "init_from": cfg.init_from,
               "train_windows": len(train), "steps": cfg.steps, "train_seconds": round(elapsed, 1),
               "final": last, "config": _cfg_dict(cfg)}
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier()
    return final


def main(cfg: DictConfig, mode: str | None = None) -> int:
    c = OmegaConf.to_container(cfg, resolve=True)
    with distributed_session(c.pop("dist", None)) as dist:  # torchrun: join the job
        sft = SFTConfig.from_dict(c)
        final = train_sft(sft, dist=dist)
    if not dist.is_main:
        return 0
    summary = json.loads((Path(sft.out) / "sft_summary.json").read_text())
    f = summary["final"]
    print_table(f"SFT -> {final}", ["what", "value"], [
        ("train episodes / windows", f"{len(summary['train_episodes'])} / {summary['train_windows']}"),
        ("validation episodes", len(summary["val_episodes"])),
        ("steps", summary["steps"]),
        ("train NLL per token", f"{f.get('losses/train_nll', float('nan')):.3f}"),
        ("val NLL per token", f"{f.get('losses/val_nll', float('nan')):.3f}"),
        ("val greedy token accuracy", f"{f.get('charts/val_token_accuracy', float('nan')):.1%}"),
        ("training time", f"{summary['train_seconds']:.0f} s"),
    ])
    return 0
