"""Training and refinement of the world model (``wvl train-wm``; Python: `train_world_model`).

One step, top to bottom:

    windows (B) sampled with outcome balance (and a per-store mix for refinement)
    video = [cond frames | next K frames] --codec--> cond latents (B, C, Tc, h, w), x0 (B, C, Tp, h, w)
    t ~ U(0, 1) per sample;  eps ~ N(0, I);  x_t = (1 - t) x0 + t eps
    v_hat, r_hat, d_hat = model(x_t, t, cond, actions, instruction)
    L = mean (x0_hat - x0)^2 [or (v_hat - v)^2] + mean_b lambda_0 (1 - t_b) BCE(r_hat_b, r_b)
        + mu mean (d_hat - d)^2       (d: each frame's robot state minus the conditioning frame's; flow.py)
    AdamW step, EMA update

Checkpoint folder layout (``out``)::

    model/              EMA weights, save_pretrained (what load_world_model / WorldModelEnv use)
    train_state.pt      online weights, EMA weights, optimizer, step, RNG (resume)
    train_config.json   model + train config, stores, init_from, finished steps, wall time
    tb/                 TensorBoard event files (losses/*, perf/*, charts/*)

Refinement = ``init_from`` a previous checkpoint (its EMA weights start both the online and the EMA copy) on
several stores with ``train.mix`` batch shares, e.g. ``[sans, rollouts]`` with ``mix=[0.5, 0.5]``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from learning.data.store import EpisodeStore
from learning.data.windows import OUTCOME_IDS, WindowDataset, WindowError, WindowSpec
from learning.distributed import Dist, current, distributed_session, wrap_world_model
from learning.world_model.config import TrainConfig, WorldModelConfig, config_mismatch
from learning.world_model.flow import flow_target, joint_loss, noisy_latents
from learning.world_model.model import MODEL_DIR, CheckpointMismatchError, WorldModel, load_world_model, state_units

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
CONFIG_FILE = "train_config.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name!r} asked for, but torch sees no CUDA device (this torch is {torch.__version__})")
    return torch.device(name)


def as_store(x: EpisodeStore | str | Path) -> EpisodeStore:
    return x if isinstance(x, EpisodeStore) else EpisodeStore(x, create=False)


class WindowSampler:
    """Training windows from one or more stores, sampled so every batch is balanced.

    Each window's probability = share(store) / (outcomes present in that store) / count(store, outcome):
    each store gets its ``mix`` share of a batch (by default its share of all windows), and within a store
    every outcome present (success, near-success, failure) gets an equal share.
    """

    def __init__(self, stores: Sequence[EpisodeStore], spec: WindowSpec, image_size: int, outcomes: Sequence[str],
                 mix: Sequence[float] | None, balance: bool) -> None:
        if mix is not None and len(mix) != len(stores):
            raise ValueError(f"train.mix: {len(mix)} shares for {len(stores)} stores; give one share per store")
        self.datasets: list[WindowDataset] = []
        self.tasks: list[dict[int, str]] = []
        for store in stores:
            idx = store.indices(outcomes=tuple(outcomes))
            if not idx:
                raise WindowError(f"store {store.root}: no episodes with outcome in {list(outcomes)} ({store.info.get('wvl', {}).get('outcomes')})")
            ds = WindowDataset(store, spec, idx)
            if ds.image_shape[:2] != (image_size, image_size):
                raise WindowError(f"store {store.root}: images are {ds.image_shape[0]}x{ds.image_shape[1]}, the world model is built for {image_size}x{image_size}")
            self.datasets.append(ds)
            self.tasks.append(dict(zip(ds.episode_indices, ds.tasks)))
        sizes = np.array([len(d) for d in self.datasets], dtype=np.float64)
        shares = sizes / sizes.sum() if mix is None else np.asarray(mix, dtype=np.float64) / sum(mix)
        weights = []
        for ds, share in zip(self.datasets, shares):
            oc = ds.window_outcomes
            w = np.ones(len(oc), dtype=np.float64)
            if balance:
                present = np.unique(oc)
                for o in present:
                    w[oc == o] = 1.0 / (len(present) * (oc == o).sum())
            else:
                w /= len(oc)
            weights.append(w * share)
        self._where = np.concatenate([np.stack([np.full(len(d), i), np.arange(len(d))], 1) for i, d in enumerate(self.datasets)])
        p = np.concatenate(weights)
        self._p = p / p.sum()

    def __len__(self) -> int:
        return len(self._where)

    def counts(self) -> dict[str, int]:
        names = {v: k for k, v in OUTCOME_IDS.items()}
        out: dict[str, int] = {}
        for ds in self.datasets:
            for o in ds.window_outcomes:
                out[names[int(o)]] = out.get(names[int(o)], 0) + 1
        return out

    def sample(self, batch_size: int, rng: np.random.Generator, rows: slice = slice(None)) -> dict[str, Any]:
        """A batch of ``batch_size`` windows; with ``rows``, only those rows of it are read (a rank's share, see
        learning/distributed.py: the draw is the same whatever the world size)."""
        picks = self._where[rng.choice(len(self._where), size=batch_size, p=self._p)][rows]
        items, tasks = [], []
        for si, wi in picks:
            it = self.datasets[si][int(wi)]
            items.append(it)
            tasks.append(self.tasks[si][int(it["episode"])])
        batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
        batch["task"] = tasks
        return batch


def store_cameras(store: EpisodeStore, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The distinct camera framings recorded in the episodes' info (``info["camera"]``; the simulator writes it).
    A world model only knows the framing it was trained on: eval compares these."""
    seen: list[dict[str, Any]] = []
    for i in (range(len(store)) if indices is None else indices):
        cam = json.loads(store.row(i).get("info_json") or "{}").get("camera")
        if cam is not None and cam not in seen:
            seen.append(cam)
    return seen


def batch_to_latents(model: WorldModel, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """A window batch -> cond latents (B, C, Tc, h, w), target latents x0 (B, C, Tp, h, w), actions, rewards, text ids
    [, the state head's target: each frame's state change since the conditioning frame (B, K, S) in STATE_UNITS]."""
    with torch.no_grad():
        cond, x0 = model.encode_window(torch.from_numpy(batch["cond"]), torch.from_numpy(batch["frames"]))
    lat = {
        "cond": cond, "x0": x0,
        "actions": torch.from_numpy(batch["actions"]).to(device),
        "rewards": torch.from_numpy(batch["rewards"]).to(device),
        "text_ids": model.tokenize(batch["task"]).to(device),
    }
    if model.state_net is not None:
        delta = torch.from_numpy(batch["states"] - batch["state_cond"][:, None]) * state_units(model.wm_config.state_features)
        lat["state_delta"] = delta.to(device)
    return lat


@torch.no_grad()
def condition_on_own_frames(model: WorldModel, batch: dict[str, Any], train: TrainConfig, rng: np.random.Generator,
                            gen: torch.Generator, rows: slice = slice(None)) -> dict[str, Any]:
    """Replace the conditioning frames of a ``train.own_frames`` share of the windows (those with a previous window)
    by the frames the model itself generates from the previous window's real frame and actions, exactly as
    `WorldModelEnv.step` makes them in imagination (decoded to uint8, ``own_frames_steps`` Euler steps). The targets
    stay the real next frames and their real success labels. Draws are made for the global batch, then this rank's
    ``rows`` kept, so the run does not depend on the world size."""
    Bg = train.batch_size
    pick = (rng.random(Bg)[rows] < train.own_frames) & np.asarray(batch["has_prev"], bool)
    noise = torch.randn((Bg, *model.noise_shape(1)[1:]), generator=gen, device="cpu")[rows]
    idx = np.flatnonzero(pick)
    if not len(idx):
        return batch
    was_training = model.training
    model.eval()
    cond, _ = model.encode_window(torch.from_numpy(batch["prev_cond"][idx]))
    latents, _, _ = model.generate(cond, torch.from_numpy(batch["prev_actions"][idx]).to(model.device),
                                model.tokenize([batch["task"][i] for i in idx]), noise[idx].to(model.device),
                                num_inference_steps=train.own_frames_steps)
    frames = model.decode_next(cond, latents).cpu().numpy()  # (n, K, H, W, 3) uint8
    model.train(was_training)
    out = {**batch, "cond": batch["cond"].copy()}
    out["cond"][idx] = frames[:, -model.wm_config.n_cond:]
    return out


def training_step(model: WorldModel, lat: dict[str, torch.Tensor], train: TrainConfig, gen: torch.Generator,
                  autocast_dtype: torch.dtype | None = None, dist: Dist | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one batch (flow matching + lambda(t)-weighted reward BCE); see the module docstring.
    With ``dist``, ``lat`` is this rank's share of the global batch: the noise of the whole batch is drawn and this
    rank's rows kept, so the run does not depend on the world size."""
    x0, cond = lat["x0"], lat["cond"]
    B, dev = x0.shape[0], x0.device
    Bg = B * (dist.world_size if dist else 1)  # the global batch
    rows = dist.rows(Bg, "train.batch_size") if dist else slice(None)
    t = torch.rand(Bg, generator=gen, device="cpu")[rows].to(dev)
    t = train.t_shift * t / (1 + (train.t_shift - 1) * t)  # shift > 1: more samples at high noise, where actions matter
    noise = torch.randn((Bg, *x0.shape[1:]), generator=gen, device="cpu")[rows].to(dev)
    t_cond = None
    if train.cond_noise > 0:  # noise the conditioning frame a little: the model later conditions on its own frames
        s = torch.rand(Bg, generator=gen, device="cpu")[rows].to(dev) * train.cond_noise
        cond = noisy_latents(cond, torch.randn((Bg, *cond.shape[1:]), generator=gen, device="cpu")[rows].to(dev), s)
        t_cond = s.clamp_min(model.wm_config.t_cond)
    with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(noisy_latents(x0, noise, t), t, cond, lat["actions"], lat["text_ids"], t_cond=t_cond)
    if model.wm_config.prediction == "x0":
        pred, target = out.x0, x0
    else:
        pred, target = out.velocity, flow_target(x0, noise)
    return joint_loss(pred, target, out.reward_logits, lat["rewards"], t, train.reward_weight,
                      out.state_delta, lat.get("state_delta"), train.state_weight)


def lr_at(step: int, train: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    frac = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    return train.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    d = min(decay, (1 + step) / (10 + step))  # short runs: the EMA must not be dominated by the random init
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - d)


def _configs(cfg: DictConfig | dict) -> tuple[WorldModelConfig, TrainConfig, dict[str, Any]]:
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return WorldModelConfig.from_dict(d.get("model") or {}), TrainConfig.from_dict(d.get("train") or {}), d


PRETRAINED_OVERRIDES = ("image_size", "chunk", "n_cond", "action_dim", "text_vocab", "text_len", "action_hidden", "action_cumulative",
                       "reward_head", "reward_hidden", "state_features", "state_hidden", "t_cond")


def train_world_model(cfg: DictConfig | dict, stores: Sequence[EpisodeStore | str | Path], init_from: str | Path | None = None,
                      out: str | Path | None = None, resume: bool | None = None, dist: Dist | None = None) -> Path:
    """Train (``init_from=None``) or refine (``init_from`` = a previous checkpoint folder) a world model.

    ``cfg``: the ``wvl train-wm`` config (``model``, ``train``, ``out``, ``resume`` sections; a DictConfig from
    learning/conf/train_wm.yaml or a plain dict). ``stores``: episode stores or their folders; with several,
    ``train.mix`` gives each one's batch share. Returns the checkpoint folder (load it with `load_world_model`).
    ``dist`` (default: the context `init_distributed` set up): under torchrun each rank trains on its
    ``batch_size / world_size`` rows of every global batch with the model sharded by FSDP2; only rank 0 writes.
    """
    model_cfg, train, raw = _configs(cfg)
    out = Path(out if out is not None else raw.get("out") or "runs/wm")
    resume = bool(raw.get("resume", True)) if resume is None else resume
    if not stores:
        raise ValueError("stores: give at least one episode store")
    dist = dist or current()
    rows = dist.rows(train.batch_size, "train.batch_size")
    device = dist.device if dist.initialized else resolve_device(train.device)
    if train.threads is not None:
        torch.set_num_threads(train.threads)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None  # bf16 on GPU, fp32 on CPU
    torch.manual_seed(train.seed)

    # With pretrained Cosmos weights the architecture is theirs; only these data-shaped fields are ours.
    pretrained = raw.get("pretrained")
    shaped = {k: v for k, v in (raw.get("model") or {}).items() if k in PRETRAINED_OVERRIDES}
    if init_from is not None:
        model = load_world_model(init_from, expect=None if pretrained else model_cfg).train()
        if pretrained:  # refining a model that started from Cosmos weights: check only the data-shaped fields
            diff = config_mismatch({k: model.wm_config.to_dict()[k] for k in shaped}, shaped)
            if diff:
                raise CheckpointMismatchError(f"{init_from}: checkpoint was made with another world-model config ({'; '.join(diff)}; checkpoint != expected)")
            model_cfg = model.wm_config
        log.info("refining from %s", init_from)
    elif pretrained:
        # The paper's start: Cosmos-Predict2 Video2World weights from a local folder.
        model = WorldModel.from_cosmos(pretrained, **shaped).train()
        model_cfg = model.wm_config
        log.info("starting from the pretrained Cosmos-Predict2 weights in %s", pretrained)
    else:
        model = WorldModel.from_wm_config(model_cfg)
    store_objs = [as_store(s) for s in stores]
    spec = WindowSpec(chunk=model_cfg.chunk, n_cond=model_cfg.n_cond, state_features=model_cfg.state_features)
    sampler = WindowSampler(store_objs, spec, model_cfg.image_size, train.outcomes, train.mix, train.balance_outcomes)
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    wrap_world_model(dist, model)  # FSDP2 under torchrun (the EMA sharded like the model); nothing on one process
    wrap_world_model(dist, ema)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, betas=(0.9, 0.99))
    step = 0
    rng = np.random.default_rng(train.seed)
    gen = torch.Generator().manual_seed(train.seed)
    wall_before = 0.0
    state_path = out / STATE_FILE
    if resume and state_path.exists():
        step, rng, gen, wall_before = _load_state(state_path, out, model, ema, opt, model_cfg, dist)
        log.info("resumed %s at step %d", out, step)

    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model_cfg.to_dict(), "train": json.loads(json.dumps(asdict(train))),
        "stores": [str(s.root) for s in store_objs], "init_from": None if init_from is None else str(init_from),
        "windows": sampler.counts(), "cameras": [c for st in store_objs for c in store_cameras(st)],
    }
    writer = dist.summary_writer(out / "tb")  # rank 0 only
    log.info("training world model: %d windows %s from %s on %s, %d params", len(sampler), sampler.counts(),
             [str(s.root) for s in store_objs], device, sum(p.numel() for p in model.parameters()))
    t0 = time.perf_counter()
    last_log, samples_since = t0, 0
    start_step = step
    model.train()
    stopped_early = False
    with dist.progress() as bar:
        job = bar.add_task("train world model", total=train.steps, completed=step, status="")
        while step < train.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, train)
            batch = sampler.sample(train.batch_size, rng, rows)
            if train.own_frames > 0:
                batch = condition_on_own_frames(model, batch, train, rng, gen, rows)
            lat = batch_to_latents(model, batch, device)
            loss, parts = training_step(model, lat, train, gen, autocast_dtype, dist)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            opt.step()
            ema_update(ema, model, step, train.ema_decay)
            step += 1
            samples_since += train.batch_size
            if step % train.log_every == 0 or step == train.steps:
                now = time.perf_counter()
                parts = dist.mean({"total": loss, **parts})  # over the global batch
                writer.add_scalar("losses/total", parts.pop("total").item(), step)
                for k, v in parts.items():
                    writer.add_scalar(f"losses/{k}", v.item(), step)
                writer.add_scalar("charts/lr", opt.param_groups[0]["lr"], step)
                writer.add_scalar("charts/grad_norm", float(gnorm), step)
                writer.add_scalar("perf/samples_per_s", samples_since / max(now - last_log, 1e-9), step)
                last_log, samples_since = now, 0
                bar.update(job, completed=step, status=" ".join(f"{k} {v.item():.4f}" for k, v in parts.items()))
            elapsed_min = (time.perf_counter() - t0) / 60
            if train.max_minutes is not None and dist.any(elapsed_min >= train.max_minutes) and step < train.steps:  # all ranks stop together
                log.info("max_minutes %.1f reached at step %d of %d; checkpointing", train.max_minutes, step, train.steps)
                stopped_early = True
                break
            if step % train.checkpoint_every == 0 and step < train.steps:
                _save(out, model, ema, opt, step, rng, gen, meta, wall_before + time.perf_counter() - t0, dist)
        bar.update(job, completed=step)
    wall = wall_before + time.perf_counter() - t0
    _save(out, model, ema, opt, step, rng, gen, {**meta, "stopped_early": stopped_early}, wall, dist)
    writer.close()
    log.info("world model: %d steps (%d this run) in %.0f s -> %s", step, step - start_step, wall, out)
    return out


def _save(out: Path, model: WorldModel, ema: WorldModel, opt: torch.optim.Optimizer, step: int, rng: np.random.Generator,
          gen: torch.Generator, meta: dict[str, Any], wall: float, dist: Dist | None = None) -> None:
    """Write the EMA model (save_pretrained) and the resumable state; each file is renamed into place.
    Every rank calls it (a sharded model's full state is gathered); rank 0 writes, in the single-process format."""
    dist = dist or Dist()
    weights = {"model": dist.model_state(model), "ema": dist.model_state(ema), "opt": dist.optimizer_state(model, opt)}
    tmp_model = out / f".{MODEL_DIR}.tmp"
    dist.save_pretrained(ema, tmp_model, weights["ema"])
    if not dist.is_main:
        return
    final = out / MODEL_DIR
    if final.exists():
        old = out / f".{MODEL_DIR}.old"
        final.rename(old)
        tmp_model.rename(final)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp_model.rename(final)
    state = {
        "step": step, **weights,
        "rng": json.dumps(rng.bit_generator.state), "gen": gen.get_state(), "wall_s": wall,
        "model_config": json.dumps(model.wm_config.to_dict()),
    }
    tmp = out / f".{STATE_FILE}.tmp"
    torch.save(state, tmp)
    tmp.replace(out / STATE_FILE)
    tmp = out / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps({**meta, "step": step, "wall_s": round(wall, 1)}, indent=2))
    tmp.replace(out / CONFIG_FILE)


def _load_state(path: Path, out: Path, model: WorldModel, ema: WorldModel, opt: torch.optim.Optimizer,
                model_cfg: WorldModelConfig, dist: Dist | None = None) -> tuple[int, np.random.Generator, torch.Generator, float]:
    dist = dist or Dist()
    # mmap: every rank of a node reads the same file without holding its own copy in memory
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    diff = config_mismatch(json.loads(state["model_config"]), model_cfg.to_dict())
    if diff:
        raise CheckpointMismatchError(f"{out}: cannot resume, the checkpoint was made with another world-model config "
                                      f"({'; '.join(diff)}; checkpoint != requested); choose another out= or resume=false")
    dist.load_model_state(model, state["model"])  # full tensors, whatever world size wrote them
    dist.load_model_state(ema, state["ema"])
    dist.load_optimizer_state(model, opt, state["opt"])
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(state["rng"])
    gen = torch.Generator()
    gen.set_state(state["gen"])
    return int(state["step"]), rng, gen, float(state["wall_s"])


def main(cfg: DictConfig, mode: str | None = None) -> int:
    """``wvl train-wm``: train or refine from the config's stores; prints where the checkpoint went."""
    with distributed_session(OmegaConf.to_container(cfg.dist, resolve=True) if "dist" in cfg else None) as dist:  # torchrun: join the job
        out = train_world_model(cfg, list(cfg.stores), init_from=cfg.init_from, dist=dist)
    if not dist.is_main:
        return 0
    from robot.console import print_table

    meta = json.loads((out / CONFIG_FILE).read_text())
    print_table(f"world model -> {out}", ["what", "value"], [
        ("steps", meta["step"]), ("wall time", f"{meta['wall_s']:.0f} s"), ("windows", meta["windows"]),
        ("stores", ", ".join(meta["stores"])), ("init_from", meta["init_from"] or "-"),
    ])
    return 0
