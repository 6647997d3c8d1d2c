"""Scale-out on torch.distributed: one process per GPU (or CPU rank), launched by ``torchrun``.

    torchrun --nproc_per_node=8 --no-python wvl train-wm stores=[...] out=runs/wm     # 8 GPUs, one node
    wvl train-wm stores=[...] out=runs/wm                                             # the same code, one process

The training commands (`wvl train-wm`, `wvl sft`, `wvl grpo`) call `init_distributed` once and thread the
returned `Dist` through their loop. Without torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) it is
the single-process context: no process group, every collective a no-op, every rank helper the identity -- world
size 1 *is* the plain run, on the same lines of code.

What makes a W-rank run equal to the 1-process run on the same global batch (checked by tests/distributed):

- **global random streams, local rows.** Every rank draws the random numbers of the whole global batch (which
  windows, their noise, their augmentation) from the same seeded generators and keeps its rows
  (`Dist.rows`: rank r keeps rows [r * B/W, (r+1) * B/W)). The RNG state is then the same on every rank and the same as
  in a 1-process run, so checkpoints hold one RNG state and resume on any world size. This is the sharded index
  sampler: each rank reads only the windows of its rows from the episode store.
- **mean over equal shards.** Each rank's loss is the mean over its B/W rows; FSDP averages gradients over ranks,
  so the update is the gradient of the global mean. Where shards are unequal (GRPO's decisions), the local loss
  is rescaled by `Dist.share`.
- **FSDP2** (`torch.distributed.fsdp.fully_shard`): each transformer block is one unit, the root module the last;
  parameters, gradients and optimizer state are sharded over the ranks (or over the GPUs of a node and replicated
  across nodes with ``hsdp``). Optional bf16 compute on GPUs (``mixed_precision: bf16``: bf16 copies of the fp32
  shards, the network under autocast, fp32 gradient reduction) and activation checkpointing of each block.
- **checkpoints are world-size independent**: full (unsharded) state dicts, gathered to rank 0 and written in the
  same files and key layout as a single-process run (`model_state`, `optimizer_state`), loaded back onto any
  number of ranks (`load_model_state`, `load_optimizer_state`). Models are written with ``save_pretrained`` as
  usual (`save_pretrained` here builds an unsharded copy on rank 0 when the model is sharded).

Only rank 0 writes files, TensorBoard events and progress bars; other ranks log warnings and errors only,
prefixed with their rank. Every collective has the process group's timeout (``timeout_s``): a rank that dies or
hangs makes the others fail within it, and torchrun then stops the job with the failing rank's error.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from robot.config_dict import dataclass_from_dict

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nccl", "gloo")
MIXED_PRECISION = {None: None, "bf16": torch.bfloat16}
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class DistributedError(RuntimeError):
    """The distributed setup cannot work as asked (backend missing, batch not divisible by the world size, ...)."""


@dataclass(frozen=True)
class DistConfig:
    """The ``dist:`` section of the train-wm / sft / grpo configs (used only when launched by torchrun)."""

    backend: str = "auto"  # auto: nccl when CUDA is available, else gloo (CPU)
    mixed_precision: str | None = None  # null | bf16: FSDP2 computes in bf16, keeps fp32 weights, reduces in fp32
    activation_checkpointing: bool = False  # recompute each transformer block in the backward pass (memory for time)
    reshard_after_forward: bool = True  # False: keep gathered weights from forward to backward (ZeRO-2; more memory)
    hsdp: bool = False  # shard within a node, replicate across nodes (multi-node: less inter-node traffic)
    timeout_s: float = 1800.0  # a collective that waits longer fails the job (a dead or hung rank); covers checkpoint writes

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"dist.backend: {self.backend!r} is not one of {BACKENDS}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"dist.mixed_precision: {self.mixed_precision!r} is not one of {list(MIXED_PRECISION)}")
        if not self.timeout_s > 0:
            raise ValueError(f"dist.timeout_s: must be > 0, got {self.timeout_s}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DistConfig":
        return dataclass_from_dict(cls, d, "dist")


@dataclass
class Dist:
    """This process's place in the job. ``Dist()`` is the single-process context (the plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group (not launched by torchrun)
    config: DistConfig = field(default_factory=DistConfig)

    @property
    def initialized(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ sharding the global batch
    def rows(self, global_batch: int, name: str) -> slice:
        """This rank's rows of a global batch of ``global_batch`` (``name``: the config field, for the error)."""
        if global_batch % self.world_size:
            raise DistributedError(
                f"{name}={global_batch} is not divisible by the world size {self.world_size} (ranks = nproc_per_node x nnodes): "
                f"every rank takes {name} / world_size of each global batch; choose a multiple of {self.world_size}")
        b = global_batch // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)

    def share(self, local: int, total: int) -> float:
        """Weight of a rank's mean loss over ``local`` of ``total`` items so that the rank-averaged gradient is the
        gradient of the mean over all ``total`` items: world_size * local / total (1 on a single process)."""
        return self.world_size * local / total if self.world_size > 1 else 1.0

    # ------------------------------------------------------------------ collectives (no-ops on one process)
    def _tensor(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)

    def all_sum(self, x: Any) -> np.ndarray:
        """Element-wise sum over ranks of a number or array (float64)."""
        if self.world_size == 1:
            return np.asarray(x, dtype=np.float64)
        t = self._tensor(x)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t.cpu().numpy()

    def any(self, flags: Any) -> bool:
        """True when any element on any rank is true (every rank gets the same answer)."""
        local = bool(np.asarray(flags).any())
        if self.world_size == 1:
            return local
        t = torch.tensor([float(local)], device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean over ranks of scalar tensors (for logging a loss of equal-size shards); the tensors as given on one process."""
        if self.world_size == 1:
            return values
        keys = list(values)
        t = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        t = t / self.world_size
        return {k: t[i] for i, k in enumerate(keys)}

    def all_gather_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenate every rank's (n_r, k) int64 array in rank order -> (sum n_r, k) and the counts (W,)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.world_size == 1:
            return rows, np.array([len(rows)])
        n = torch.tensor([len(rows)], dtype=torch.int64, device=self.device)
        counts = [torch.zeros_like(n) for _ in range(self.world_size)]
        tdist.all_gather(counts, n)
        counts_np = np.array([int(c.item()) for c in counts])
        pad = np.zeros((int(counts_np.max()), rows.shape[1]), np.int64)
        pad[:len(rows)] = rows
        parts = [torch.zeros(pad.shape, dtype=torch.int64, device=self.device) for _ in range(self.world_size)]
        tdist.all_gather(parts, torch.from_numpy(pad).to(self.device))
        return np.concatenate([p.cpu().numpy()[:c] for p, c in zip(parts, counts_np)]), counts_np

    def barrier(self) -> None:
        if self.world_size > 1:
            tdist.barrier()

    # ------------------------------------------------------------------ models
    def wrap(self, model: nn.Module, blocks: Sequence[nn.Module], root: nn.Module | None = None,
             forward_methods: Sequence[str] = (), ignored_params: Iterable[nn.Parameter] = ()) -> nn.Module:
        """Activation checkpointing (if configured) and FSDP2 (when launched by torchrun) for ``model``.

        ``blocks``: the repeated transformer blocks, one FSDP unit each; ``root``: the module whose forward every call
        goes through (default ``model``); ``forward_methods``: other methods of ``root`` that run the network and so
        must gather the sharded weights as forward does; ``ignored_params``: parameters kept whole on every rank
        (frozen modules used outside forward, e.g. a VAE encoder). Returns ``model`` (changed in place)."""
        cfg = self.config
        if cfg.activation_checkpointing:
            for block in blocks:
                _checkpoint_forward(block)
        if cfg.mixed_precision and not self.initialized:
            raise DistributedError(f"dist.mixed_precision={cfg.mixed_precision}: FSDP2's mixed precision needs a torchrun "
                                   "launch (one GPU: torchrun --nproc_per_node=1 --no-python wvl ...)")
        if cfg.mixed_precision and self.device.type != "cuda":
            # CPU autocast leaves norms with bf16 weights and fp32 inputs uncast (a dtype error); CUDA autocast runs them in fp32.
            raise DistributedError(f"dist.mixed_precision={cfg.mixed_precision} is a GPU option (backend nccl); on CPUs (gloo) "
                                   "train in fp32: dist.mixed_precision=null")
        if not self.initialized:
            return model
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        # FSDP2 warns when a wrapped module returns a view (our models return slices of the transformer output); the
        # danger it names is an in-place op on that view, which no caller here does.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        dtype = MIXED_PRECISION[cfg.mixed_precision]
        # bf16: FSDP2 gathers and computes with bf16 copies of the fp32 shards and reduces gradients in fp32; inputs are
        # not cast (timesteps, pixel statistics stay fp32) and the network runs under autocast, so the fp32 islands of
        # our models (norms, pooled reward features, losses) get fp32 operands.
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=False) if dtype else MixedPrecisionPolicy()
        kw = dict(mesh=self.mesh(), mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
        for block in blocks:
            fully_shard(block, **kw)
        root = model if root is None else root
        ignored = set(ignored_params)
        fully_shard(root, ignored_params=ignored or None, **kw)
        for name in ("forward", *forward_methods):
            if dtype:
                _autocast_method(root, name, self.device.type, dtype)
            if name != "forward":
                register_fsdp_forward_method(root, name)
        return model

    def mesh(self):
        """The device mesh of FSDP: 1-D over all ranks, or (nodes, GPUs per node) with ``hsdp``."""
        from torch.distributed.device_mesh import init_device_mesh

        if not hasattr(self, "_mesh"):
            if self.config.hsdp and self.world_size > self.local_world_size:
                if self.world_size % self.local_world_size:
                    raise DistributedError(f"dist.hsdp: world size {self.world_size} is not a multiple of the ranks per node {self.local_world_size}")
                self._mesh = init_device_mesh(self.device.type, (self.world_size // self.local_world_size, self.local_world_size),
                                              mesh_dim_names=("replicate", "shard"))
            else:
                self._mesh = init_device_mesh(self.device.type, (self.world_size,), mesh_dim_names=("shard",))
        return self._mesh

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full state dict (CPU tensors, plain keys). Sharded: a collective; rank 0 gets it, others ``{}``."""
        if not is_sharded(model):
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_model_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load a full state dict (from any world size) into ``model``; every rank passes the whole dict."""
        if not is_sharded(model):
            model.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """``opt.state_dict()`` as a single process writes it (parameters numbered in param-group order), for any
        world size. Sharded: a collective; rank 0 gets it, others ``{}``."""
        if not is_sharded(model):
            return opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not full:
            return {}
        index = {fqn: i for i, fqn in enumerate(_param_fqns(model, opt))}
        groups = [{**g, "params": [index[p] for p in g["params"]]} for g in full["param_groups"]]
        return {"state": {index[k]: v for k, v in full["state"].items()}, "param_groups": groups}

    def load_optimizer_state(self, model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load what `optimizer_state` wrote (by any world size) into ``opt`` over ``model``'s (sharded) parameters."""
        if not is_sharded(model):
            opt.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        fqns = _param_fqns(model, opt)
        if len(fqns) != sum(len(g["params"]) for g in state["param_groups"]):
            raise DistributedError(f"optimizer state: holds {sum(len(g['params']) for g in state['param_groups'])} parameters, "
                                   f"this model has {len(fqns)}; the checkpoint is from another model")
        full = {"state": {fqns[int(i)]: v for i, v in state["state"].items()},
                "param_groups": [{**g, "params": [fqns[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(model, opt, full, options=StateDictOptions(full_state_dict=True))

    def save_pretrained(self, model: nn.Module, folder: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """``model.save_pretrained(folder)`` on rank 0 (a collective when ``model`` is sharded: every rank calls it;
        ``state``: its `model_state`, if already gathered)."""
        if not is_sharded(model):
            if self.is_main:
                model.save_pretrained(folder)
            return
        state = self.model_state(model) if state is None else state
        if self.is_main:
            _unsharded_copy(model, state).save_pretrained(folder)

    # ------------------------------------------------------------------ rank-0 output
    def summary_writer(self, logdir: str | Path):
        """TensorBoard writer on rank 0; a writer that drops everything elsewhere."""
        if not self.is_main:
            return _NullWriter()
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(logdir))

    def progress(self):
        """robot.console's progress bar on rank 0; a disabled one elsewhere."""
        from robot.console import progress

        bar = progress()
        bar.disable = not self.is_main
        return bar

    def close(self) -> None:
        """Leave the process group (end of a command); the module goes back to the single-process context."""
        global _current
        if self.initialized and tdist.is_initialized():
            tdist.destroy_process_group()
        _current = Dist()


class _NullWriter:
    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


_current = Dist()


def current() -> Dist:
    """The context `init_distributed` set up in this process (the single-process one if none)."""
    return _current


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in TORCHRUN_ENV)


def init_distributed(cfg: DistConfig | dict | None = None) -> Dist:
    """Join the job torchrun started (process group with timeouts, this rank's device, rank-0-only logging), or
    return the single-process context when not launched by torchrun. Call once per command, `Dist.close` at the end."""
    global _current
    cfg = cfg if isinstance(cfg, DistConfig) else DistConfig.from_dict(cfg)
    if not launched_by_torchrun():
        _current = Dist(config=cfg)
        return _current
    if _current.initialized:
        raise DistributedError("init_distributed: this process already joined a process group")
    rank, world, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not (tdist.is_available() and tdist.is_nccl_available()):
            raise DistributedError(f"dist.backend=nccl: this torch build ({torch.__version__}) has no NCCL; install a CUDA build "
                                   "of torch, or use dist.backend=gloo to run on CPUs")
        if not torch.cuda.is_available():
            raise DistributedError("dist.backend=nccl: torch sees no CUDA device on this node (CUDA_VISIBLE_DEVICES? driver?); "
                                   "dist.backend=gloo runs on CPUs")
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA device(s): "
                                   f"torchrun --nproc_per_node must not exceed the GPUs per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        # A timed-out NCCL collective tears the process down instead of leaving it blocked (torchrun then stops the job).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    else:
        if not tdist.is_gloo_available():
            raise DistributedError(f"dist.backend=gloo: this torch build ({torch.__version__}) has no gloo")
        device = torch.device("cpu")
    kw = {"device_id": device} if backend == "nccl" else {}
    tdist.init_process_group(backend, timeout=timedelta(seconds=cfg.timeout_s), **kw)
    _current = Dist(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, device=device,
                    backend=backend, config=cfg)
    _rank_zero_logging(rank)
    log.info("distributed: %d ranks (%d per node), backend %s, FSDP2%s%s%s", world, local_world, backend,
             " (HSDP: sharded within a node, replicated across nodes)" if cfg.hsdp and world > local_world else "",
             f", {cfg.mixed_precision} compute" if cfg.mixed_precision else "",
             ", activation checkpointing" if cfg.activation_checkpointing else "")
    return _current


@contextmanager
def distributed_session(cfg: DistConfig | dict | None = None) -> Iterator[Dist]:
    """``with distributed_session(cfg.dist) as dist:`` -- `init_distributed`, then `Dist.close`; an error on a rank is
    logged with the rank (and, for a timed-out collective, what that means) before it ends the process, after which
    torchrun stops the other ranks."""
    dist = init_distributed(cfg)
    try:
        yield dist
    except BaseException as e:
        if dist.initialized:
            timed_out = "timed out" in str(e).lower() or "timeout" in type(e).__name__.lower()
            hint = (f"; a collective waited longer than dist.timeout_s={dist.config.timeout_s:g} s: another rank died or hung "
                    "(torchrun's failure summary names it)") if timed_out else ""
            log.error("rank %d of %d failed: %s: %s%s", dist.rank, dist.world_size, type(e).__name__, e, hint)
        raise
    finally:
        dist.close()


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        record.msg = f"[rank {self.rank}] {record.msg}"
        return True


def _rank_zero_logging(rank: int) -> None:
    """Ranks other than 0 print warnings and errors only (tagged with their rank); rank 0 logs as configured."""
    if rank == 0:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RankFilter(rank))


# ---------------------------------------------------------------------------------------------- helpers
def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _param_fqns(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the order torch numbers them in ``opt.state_dict()``."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for g in opt.param_groups for p in g["params"]]


def _orig_class(model: nn.Module) -> type:
    """The model's own class (fully_shard swaps in a subclass named FSDP<Class>)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def _unsharded_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """An ordinary copy of a sharded model holding ``state``: built on the meta device (no memory, no init), the full
    tensors assigned. Knows the diffusers-style models (``from_config``) and the Hugging Face VLA adapter."""
    cls = _orig_class(model)
    if hasattr(cls, "from_config") and hasattr(model, "config") and not hasattr(model, "processor"):
        with torch.device("meta"):
            copy = cls.from_config(model.config)
        copy.load_state_dict(state, assign=True)
        return copy
    if hasattr(model, "processor") and hasattr(model, "model"):  # learning.policy.hf_vla.HFVLA
        inner = model.model
        with torch.device("meta"):
            inner_copy = _orig_class(inner)._from_config(inner.config)
        inner_copy.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}, assign=True)
        inner_copy.tie_weights()
        return cls(inner_copy, model.processor, model.config)
    raise DistributedError(f"save_pretrained: do not know how to rebuild a {cls.__name__} unsharded for saving")


def _autocast_method(module: nn.Module, name: str, device_type: str, dtype: torch.dtype) -> None:
    """Run ``module.<name>`` under torch.autocast (instance attribute: parameter names and state dicts unchanged)."""
    inner = getattr(module, name)

    @functools.wraps(inner)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            return inner(*args, **kwargs)

    setattr(module, name, run)


def _checkpoint_forward(block: nn.Module) -> None:
    """Activation checkpointing without renaming parameters: the block's forward runs under
    torch.utils.checkpoint (non-reentrant), so its activations are recomputed in backward instead of kept."""
    if getattr(block, "_wvl_checkpointed", False):
        return
    from torch.utils.checkpoint import checkpoint

    inner = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward
    block._wvl_checkpointed = True


# Models of this repository -> (blocks, root, forward methods, parameters kept whole). Kept here so the model files
# need not know about sharding.
def wrap_world_model(dist: Dist, model: nn.Module) -> nn.Module:
    """FSDP2 units of the world model: each Cosmos transformer block, then the whole model; the codec's weights (the
    frozen Wan VAE, used by encode/decode outside forward) stay whole on every rank."""
    return dist.wrap(model, list(model.transformer.transformer_blocks), ignored_params=list(model.latent_codec.parameters()))


def wrap_policy(dist: Dist, policy: nn.Module) -> nn.Module:
    """FSDP2 units of a VLA: the compact VLA's transformer blocks (its network runs through ``logits_and_aux``,
    not forward), or the Hugging Face model's decoder/encoder layers (its ``_no_split_modules``)."""
    if hasattr(policy, "processor") and hasattr(policy, "model"):  # HFVLA: calls go through the inner model's forward
        names = set(getattr(policy.model, "_no_split_modules", None) or [])
        blocks = [m for m in policy.model.modules() if type(m).__name__ in names]
        if not blocks:
            raise DistributedError(f"wrap_policy: found no layers of {sorted(names)} in {type(policy.model).__name__} to shard")
        return dist.wrap(policy, blocks, root=policy.model)
    return dist.wrap(policy, list(policy.blocks), forward_methods=("logits_and_aux",))


__all__ = ["Dist", "DistConfig", "DistributedError", "current", "distributed_session", "init_distributed", "launched_by_torchrun",
           "wrap_policy", "wrap_world_model"]
