"""learning/distributed.py in this process: the single-process context, bad input (a world size that does not divide
the global batch, NCCL missing, bad dist config), activation checkpointing, and FSDP2 on a one-rank gloo group
(state dicts and optimizer state in the single-process layout, save_pretrained of a sharded compact VLA and of
the Hugging Face adapter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as tdist

from learning.cli import main as wvl
from learning.distributed import Dist, DistConfig, DistributedError, current, init_distributed, wrap_policy
from learning.policy import load_policy
from learning.policy.sft import SFTConfig, sft_loss, train_sft
from learning.rl.grpo import GRPOConfig, train_grpo
from learning.world_model.train import train_world_model
from tests.distributed.conftest import assert_close_states
from tests.policy.conftest import INSTRUCTION, tiny_compact, tiny_store  # noqa: F401  (fixture)
from tests.policy.test_hf_vla import tiny_vlm  # noqa: F401  (fixture)
from tests.world_model.conftest import tiny_config


def test_one_process_is_the_plain_run():
    d = Dist()
    assert not d.initialized and d.is_main and d.rows(6, "x") == slice(0, 6) and d.share(3, 7) == 1.0
    x = torch.tensor(2.5)
    assert d.mean({"a": x})["a"] is x  # the same tensor, not a copy: logging is unchanged
    assert d.all_sum([1.0, 2.0]).tolist() == [1.0, 2.0] and d.any([False, True]) and not d.any([False])
    rows, counts = d.all_gather_rows(np.array([[0, 1], [1, 1]]))
    assert rows.tolist() == [[0, 1], [1, 1]] and counts.tolist() == [2]
    assert current().world_size == 1  # nothing joined a process group here


def test_rows_of_the_global_batch_and_a_world_size_that_does_not_divide_it():
    assert [Dist(rank=r, world_size=4).rows(8, "b") for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert Dist(rank=1, world_size=4).share(3, 8) == 1.5  # 3 of 8 items: weight 4 * 3/8 on a rank-averaged gradient
    with pytest.raises(DistributedError, match=r"train.batch_size=6 is not divisible by the world size 4"):
        Dist(world_size=4).rows(6, "train.batch_size")


def test_each_command_refuses_a_global_batch_its_world_size_does_not_divide(tmp_path, tiny_store):  # noqa: F811
    three = Dist(rank=0, world_size=3)  # checked before any data is read or any rank waits on another
    with pytest.raises(DistributedError, match="train.batch_size=4 is not divisible by the world size 3"):
        train_world_model({"model": tiny_config().to_dict(), "train": {"batch_size": 4}}, [tmp_path / "nowhere"], out=tmp_path / "wm", dist=three)
    with pytest.raises(DistributedError, match="batch_size=32 is not divisible by the world size 3"):
        train_sft(SFTConfig(store=str(tiny_store.root), out=str(tmp_path / "sft")), tiny_store, dist=three)
    with pytest.raises(DistributedError, match="grpo.starts_per_step=8 is not divisible by the world size 3"):
        train_grpo(None, None, np.zeros((2, 32, 32, 3), np.uint8), INSTRUCTION, GRPOConfig(), tmp_path / "grpo", dist=three)


def test_nccl_unavailable_and_bad_dist_config_are_clear_errors(monkeypatch, tmp_path, tiny_store, capsys):  # noqa: F811
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)  # as torchrun sets them
    if not (tdist.is_nccl_available() and torch.cuda.is_available()):
        with pytest.raises(DistributedError, match="dist.backend=nccl: (this torch build .* has no NCCL|torch sees no CUDA device)"):
            init_distributed({"backend": "nccl"})
    with pytest.raises(ValueError, match=r"dist.backend: 'mpi' is not one of"):
        DistConfig(backend="mpi")
    with pytest.raises(ValueError, match=r"dist.mixed_precision: 'fp8'"):
        DistConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"dist: unknown keys \['fsdp_version'\]"):
        DistConfig.from_dict({"fsdp_version": 2})
    rc = wvl(["sft", f"store={tiny_store.root}", f"out={tmp_path / 'sft'}", "dist.backend=nccl"])
    assert rc == 2 and "dist.backend=nccl" in capsys.readouterr().err
    assert current().world_size == 1 and not tdist.is_initialized()
    # bf16 through FSDP2 needs a torchrun launch; a plain run says so instead of silently training in fp32
    with pytest.raises(DistributedError, match="dist.mixed_precision=bf16: FSDP2's mixed precision needs a torchrun launch"):
        wrap_policy(Dist(config=DistConfig(mixed_precision="bf16")), tiny_compact())
    with pytest.raises(DistributedError, match="dist.mixed_precision=bf16 is a GPU option"):  # gloo ranks on CPUs
        wrap_policy(Dist(world_size=2, backend="gloo", config=DistConfig(mixed_precision="bf16")), tiny_compact())


def test_activation_checkpointing_recomputes_the_same_gradients():
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    chunks = np.random.default_rng(1).uniform(-1, 1, (4, 8, 7)).astype(np.float32)
    grads = []
    for ac in (False, True):
        policy = tiny_compact(n_layers=2).train()
        wrap_policy(Dist(config=DistConfig(activation_checkpointing=ac)), policy)
        loss, _ = sft_loss(policy, images, INSTRUCTION, chunks)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()  # parameter names unchanged (checkpoints stay compatible)
    assert_close_states(grads[0], grads[1], 1e-6, "grad")


@pytest.fixture
def one_rank_group(tmp_path):
    """A real gloo process group of one rank in this process: FSDP2 shards over it (one shard)."""
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield Dist(rank=0, world_size=1, backend="gloo")
    finally:
        tdist.destroy_process_group()


def test_fsdp_state_and_optimizer_state_have_the_single_process_layout(one_rank_group, tmp_path):
    from torch.distributed.tensor import DTensor

    dist = one_rank_group
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    chunks = np.random.default_rng(1).uniform(-1, 1, (4, 8, 7)).astype(np.float32)
    plain, sharded = tiny_compact().train(), wrap_policy(dist, tiny_compact().train())
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (plain, sharded)]
    for _ in range(2):
        for m, opt in zip((plain, sharded), opts):
            opt.zero_grad()
            sft_loss(m, images, INSTRUCTION, chunks)[0].backward()
            opt.step()
    assert_close_states(plain.state_dict(), dist.model_state(sharded), 1e-6, "model")
    want, got = opts[0].state_dict(), dist.optimizer_state(sharded, opts[1])
    assert want["param_groups"] == got["param_groups"] and want["state"].keys() == got["state"].keys()
    for i in want["state"]:
        assert_close_states(want["state"][i], got["state"][i], 1e-6, f"opt.state[{i}]")
    # ... and loads back into a sharded copy (any world size: full tensors, numbered parameters)
    again = wrap_policy(dist, tiny_compact().train())
    opt = torch.optim.AdamW(again.parameters(), lr=1e-3)
    dist.load_model_state(again, plain.state_dict())
    dist.load_optimizer_state(again, opt, want)
    assert_close_states(plain.state_dict(), dist.model_state(again), 0, "reloaded model")
    assert_close_states(want["state"][0], dist.optimizer_state(again, opt)["state"][0], 0, "reloaded opt")
    with pytest.raises(DistributedError, match="holds 1 parameters, this model has"):
        dist.load_optimizer_state(again, opt, {"state": {}, "param_groups": [{**want["param_groups"][0], "params": [0]}]})
    # save_pretrained writes an ordinary policy folder from the sharded one
    dist.save_pretrained(sharded, tmp_path / "policy")
    assert_close_states(plain.state_dict(), load_policy(tmp_path / "policy").state_dict(), 1e-6, "saved")


def test_the_hugging_face_vla_shards_trains_and_saves(one_rank_group, tiny_vlm, tmp_path):  # noqa: F811
    from learning.policy.hf_vla import HFVLA

    dist = one_rank_group
    vla = wrap_policy(dist, HFVLA.from_pretrained(tiny_vlm, instructions=[INSTRUCTION]).train())
    images = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    chunks = np.random.default_rng(1).uniform(-1, 1, (2, 8, 7)).astype(np.float32)
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-2)
    opt.zero_grad()
    sft_loss(vla, images, INSTRUCTION, chunks)[0].backward()
    opt.step()
    with torch.no_grad():
        sampled = vla.sample(images, INSTRUCTION, temperature=0.0)[1]  # decoding with a KV cache through the sharded model
    dist.save_pretrained(vla, tmp_path / "vla")
    back = load_policy(tmp_path / "vla")
    assert_close_states(dist.model_state(vla), back.state_dict(), 1e-6, "saved")
    assert torch.equal(back.sample(images, INSTRUCTION, temperature=0.0)[1], sampled)
