"""The CPU proof of the distributed path: `wvl train-wm`, `wvl sft` and `wvl grpo` under
``torchrun --nproc_per_node=2`` (gloo, FSDP2) give the 1-process result for the same global batch, checkpoints
resume across world sizes, and a rank that hangs takes the job down within the timeout.

Each test launches one torchrun job (two fresh Python processes: ~20-40 s on the shared 2-core machine, most of it
importing torch and diffusers); the 1-process references run in this process through the same CLI.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from learning.cli import main as wvl
from learning.data.store import EpisodeStore
from learning.world_model.model import WorldModel
from learning.world_model.train import STATE_FILE
from tests.distributed.conftest import assert_close_states, assert_ok, torchrun, torchrun_nodes
from tests.factories import random_episode
from tests.policy.conftest import tiny_compact
from tests.world_model.conftest import make_store, tiny_config, tiny_overrides

pytestmark = pytest.mark.slow

# Float sums over 2 shards instead of 1 batch differ in the last bits; Adam (v ~ 0 early) can magnify that a little.
ATOL = 1e-5


def _wm_state(folder):
    return torch.load(folder / STATE_FILE, weights_only=True)


def test_train_wm_on_two_ranks_equals_one_process_and_resumes_on_one(tmp_path):
    store = make_store(tmp_path / "sans")
    base = tiny_overrides(stores=f"[{store.root}]", **{"train.cond_noise": 0.1})  # global batch 4: 2 windows per rank
    assert wvl(["train-wm", *base, f"out={tmp_path / 'one2'}", "train.steps=2"]) == 0
    assert wvl(["train-wm", *base, f"out={tmp_path / 'one4'}", "train.steps=4"]) == 0
    # FSDP2 on 2 ranks, with activation checkpointing (recomputation changes no number)
    proc, _ = torchrun(["train-wm", *base, f"out={tmp_path / 'two'}", "train.steps=2", "dist.activation_checkpointing=true"])
    assert_ok(proc)
    assert proc.stdout.count("distributed: 2 ranks") == 1 and proc.stdout.count("world model ->") == 1  # rank 0 logs and prints
    assert len(list((tmp_path / "two" / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 writes

    one, two = _wm_state(tmp_path / "one2"), _wm_state(tmp_path / "two")
    assert one["step"] == two["step"] == 2
    assert_close_states(one["model"], two["model"], ATOL, "model")
    assert_close_states(one["ema"], two["ema"], ATOL, "ema")
    # the optimizer state is written as a single process writes it (parameters numbered in order)
    assert one["opt"]["param_groups"] == two["opt"]["param_groups"]
    for i in one["opt"]["state"]:
        assert_close_states(one["opt"]["state"][i], two["opt"]["state"][i], ATOL, f"opt.state[{i}]")
    assert torch.equal(one["gen"], two["gen"]) and one["rng"] == two["rng"]  # one RNG state, whatever the world size

    # the 2-rank checkpoint resumes on one process: = 4 uninterrupted steps
    assert wvl(["train-wm", *base, f"out={tmp_path / 'two'}", "train.steps=4"]) == 0
    one, two = _wm_state(tmp_path / "one4"), _wm_state(tmp_path / "two")
    assert two["step"] == 4
    assert_close_states(one["ema"], two["ema"], ATOL, "ema after resume")
    # model/ (save_pretrained from rank 0's gathered EMA) loads as usual
    assert WorldModel.from_pretrained(tmp_path / "two" / "model").wm_config == tiny_config()


def _sft_store(root) -> EpisodeStore:
    store = EpisodeStore(root)
    for i, outcome in enumerate(["success"] * 5 + ["near_success"]):
        store.append(random_episode(T=12, H=16, W=16, seed=i, outcome=outcome))
    return store


SFT_MODEL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.mlp_ratio=2", "model.conv_channels=[8,16]",
             "model.keypoints=4", "model.keypoint_level=1", "model.max_instruction_len=12"]


def test_sft_resumes_a_one_process_checkpoint_on_two_ranks_with_the_one_process_result(tmp_path, capsys):
    store = _sft_store(tmp_path / "store")
    base = ["sft", f"store={store.root}", "batch_size=4", "max_episodes=3", "val_episodes=1", "log_every=1", "val_every=2",
            "checkpoint_every=1", *SFT_MODEL]
    assert wvl([*base, f"out={tmp_path / 'one'}", "steps=4"]) == 0
    assert wvl([*base, f"out={tmp_path / 'two'}", "steps=2"]) == 0  # checkpoint at step 1
    proc, _ = torchrun([*base, f"out={tmp_path / 'two'}", "steps=4"])  # resumes at step 1 on 2 ranks
    assert_ok(proc)
    assert "resuming from" in proc.stdout and proc.stdout.count("SFT ->") == 1

    a = load_file(tmp_path / "one" / "policy" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "two" / "policy" / "diffusion_pytorch_model.safetensors")
    assert_close_states(a, b, ATOL, "policy")
    rows = lambda f: {r["step"]: r for r in map(json.loads, (tmp_path / f / "metrics.jsonl").read_text().splitlines())}  # noqa: E731
    one, two = rows("one"), rows("two")
    for step in (3, 4):  # losses averaged over both ranks' rows = the 1-process batch's
        for k in ("losses/train_nll", "losses/train_aux_mse", "charts/grad_norm"):
            assert one[step][k] == pytest.approx(two[step][k], rel=1e-5, abs=1e-6), (step, k)
    assert one[4]["losses/val_nll"] == pytest.approx(two[4]["losses/val_nll"], rel=1e-5)
    # the 2-rank checkpoints resume on one process too, and refuse another architecture naming the field
    assert wvl([*base, f"out={tmp_path / 'two'}", "steps=5", "model.d_model=64"]) == 2
    assert "model.d_model: 32 != 64" in capsys.readouterr().err


def test_two_nodes_with_hsdp_equal_one_process(tmp_path):
    """Two torchrun agents (the README's 2-node command, here both on this machine): ranks on different nodes hold
    replicas (HSDP), and SFT still gives the 1-process result."""
    store = _sft_store(tmp_path / "store")
    base = ["sft", f"store={store.root}", "batch_size=4", "max_episodes=3", "val_episodes=1", "steps=2", *SFT_MODEL]
    assert wvl([*base, f"out={tmp_path / 'one'}"]) == 0
    nodes = torchrun_nodes([*base, f"out={tmp_path / 'two'}", "dist.hsdp=true"])
    for proc in nodes:
        assert_ok(proc)
    assert "distributed: 2 ranks (1 per node), backend gloo, FSDP2 (HSDP" in nodes[0].stdout
    a = load_file(tmp_path / "one" / "policy" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "two" / "policy" / "diffusion_pytorch_model.safetensors")
    assert_close_states(a, b, ATOL, "policy")


def test_grpo_on_two_ranks_equals_one_process(tmp_path):
    torch.manual_seed(0)
    WorldModel.from_wm_config(tiny_config()).save_pretrained(tmp_path / "wm")  # random-initialised: rewards ~0.5
    policy = tiny_compact(image_size=32, chunk_length=tiny_config().chunk)
    policy.save_pretrained(tmp_path / "policy")
    store = make_store(tmp_path / "store", n_per_outcome=2)
    # 2 groups of 4 per step, one per rank; 2 epochs of minibatches of 8 decisions that mix both ranks' decisions
    args = ["grpo", f"policy={tmp_path / 'policy'}", f"world_model={tmp_path / 'wm'}", f"store={store.root}", "grpo.steps=2",
            "grpo.group_size=4", "grpo.starts_per_step=2", "grpo.horizon_chunks=2", "grpo.success_threshold=0.5",
            "grpo.minibatch=8", "grpo.epochs=2", "grpo.lr=3e-4", "grpo.num_inference_steps=1"]
    assert wvl([*args, f"out={tmp_path / 'one'}"]) == 0
    proc, _ = torchrun([*args, f"out={tmp_path / 'two'}"])
    assert_ok(proc)

    one = [json.loads(x) for x in (tmp_path / "one" / "grpo_log.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "grpo_log.jsonl").read_text().splitlines()]
    assert [h["updated"] for h in one] == [1.0, 1.0]  # informative groups: the comparison is not of two no-ops
    for h1, h2 in zip(one, two):
        for k in ("imagined_success", "informative_groups", "decisions", "chunks_per_trajectory"):
            assert h1[k] == h2[k], k  # the same rollouts
        for k in ("loss", "clip_fraction", "approx_kl", "entropy", "adv_abs_mean"):
            assert h1[k] == pytest.approx(h2[k], rel=1e-5, abs=1e-7), k
    a = load_file(tmp_path / "one" / "policy" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "two" / "policy" / "diffusion_pytorch_model.safetensors")
    assert_close_states(a, b, 1e-4, "policy")
    moved = max((a[k] - v.detach()).abs().max().item() for k, v in policy.state_dict().items() if k in a)
    assert moved > 1e-3  # and GRPO did change the policy


def test_a_rank_that_hangs_takes_the_job_down_with_a_message(tmp_path):
    """Rank 1 stops answering in its second optimizer step (a stuck device, a dead file system); rank 0's next
    collective times out after dist.timeout_s, it exits with its rank and the reason, and torchrun stops rank 1."""
    store = _sft_store(tmp_path / "store")
    launcher = tmp_path / "launch.py"
    launcher.write_text(textwrap.dedent("""
        import os, sys, time, torch
        from learning.cli import main
        if os.environ["RANK"] == "1":
            step, calls = torch.optim.AdamW.step, []
            def hang_on_second_step(self, *args, **kwargs):
                calls.append(1)
                if len(calls) == 2:
                    time.sleep(600)
                return step(self, *args, **kwargs)
            torch.optim.AdamW.step = hang_on_second_step
        sys.exit(main(sys.argv[1:]))
    """))
    proc, seconds = torchrun(["sft", f"store={store.root}", f"out={tmp_path / 'out'}", "steps=100", "batch_size=4", "max_episodes=3",
                              "val_episodes=1", *SFT_MODEL, "dist.timeout_s=5"], script=launcher, timeout=240)
    assert proc.returncode != 0
    assert "rank 0 of 2 failed" in proc.stdout and "dist.timeout_s=5 s" in proc.stdout, proc.stdout[-4000:]
    assert "SIGTERM" in proc.stdout  # torchrun stopped the hung rank
    assert seconds < 200  # not a hang: imports + a few steps + the 5 s timeout
    assert not (tmp_path / "out" / "policy").exists()
