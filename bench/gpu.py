"""GPU throughput of the scale-out path at the paper's sizes: world-model training, imagination, the 7B policy.

    # one GPU (the figures bench/RESULTS.md asks for)
    torchrun --standalone --nproc_per_node=1 bench/gpu.py --preset paper
    # 8 GPUs of one node: the same per-GPU batch on every rank, FSDP2 over the 8
    torchrun --standalone --nproc_per_node=8 bench/gpu.py --preset paper
    # CPU smoke check (the same code at tiny sizes; gloo when under torchrun)
    .venv/bin/python bench/gpu.py --preset tiny
    .venv/bin/torchrun --standalone --nproc_per_node=2 bench/gpu.py --preset tiny

What runs is the code `wvl train-wm` / `wvl grpo` run (learning/distributed.py: FSDP2 units, mixed precision,
activation checkpointing; learning/world_model/train.py: `batch_to_latents`, `training_step`, `ema_update`;
learning/world_model/env.py; learning/policy/hf_vla.py), on random weights and random frames (speed does not
depend on them). ``--preset paper``:

1. **world-model training**: the 2B Cosmos-Predict2 Video2World transformer config (bench/world_model.py's
   ``COSMOS_2B_TRANSFORMER``) + Wan 2.1 VAE, 256x256 frames, ``--chunk`` frames per window, random init; one step =
   VAE-encode the window, flow + reward loss, backward, AdamW, EMA -- FSDP2 with bf16 compute (fp32 master weights,
   fp32 gradient reduction) under torchrun, bf16 autocast otherwise; ``--activation-checkpointing`` optional.
   -> global training samples/s and peak GPU memory per rank.
2. **imagination**: `WorldModelEnv.step` of the same model with bf16 weights, ``--sampling-steps`` Euler steps,
   ``--imagine-batch`` rollouts per rank (replicated on every rank, as `wvl grpo` keeps it). -> imagined env steps/s
   (frames of all rollouts, all ranks) and peak memory.
3. **policy**: a 7B-sized VLA -- the Hugging Face adapter (`HFVLA`) on a Llava of Llama-2-7B text (32 layers, 4096
   wide, 32k vocabulary) + CLIP ViT-L/14 vision (224 px), random init, bf16 weights, FSDP2 under torchrun.
   ``sample`` (K * D = 56 action tokens decoded with a KV cache, plus the log-prob recomputation) and
   ``token_log_probs`` forward + backward (GRPO's update pass; no optimizer state). -> samples/s and peak memory.

Per phase: the median of ``--iters`` timed iterations after ``--warmup``. Prints a table; the LAST line holds the
headline figures as ``name=value`` pairs (peak memory is NaN on CPU).
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning.distributed import Dist, distributed_session, launched_by_torchrun, wrap_policy, wrap_world_model  # noqa: E402
from learning.world_model.config import TINY_TRANSFORMER, TrainConfig, WorldModelConfig  # noqa: E402
from learning.world_model.env import WorldModelEnv  # noqa: E402
from learning.world_model.model import WorldModel  # noqa: E402
from learning.world_model.train import batch_to_latents, ema_update, training_step  # noqa: E402
from robot.console import print_table  # noqa: E402
from world_model import COSMOS_2B_TRANSFORMER, WAN21_VAE  # noqa: E402  (bench/world_model.py)

INSTRUCTION = "pick up the red cube"
TINY_VAE = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1, "temperal_downsample": [False, True, True]}
# Llama-2-7B (text) and CLIP ViT-L/14 at 224 px (vision): the size class of OpenVLA's 7B backbone.
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=4096, vocab_size=32064)
CLIP_L14_224 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14)
PRESETS = {
    "paper": dict(wm_transformer=COSMOS_2B_TRANSFORMER, vae=WAN21_VAE, image_size=256, text=LLAMA2_7B, vision=CLIP_L14_224),
    "tiny": dict(wm_transformer={**TINY_TRANSFORMER, "patch_size": [1, 2, 2]}, vae=TINY_VAE, image_size=32,
                 text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                           max_position_embeddings=512, vocab_size=400),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)),
}


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B params" if n >= 1e8 else f"{n / 1e6:.2f}M params"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def world_model_config(preset: dict, chunk: int) -> WorldModelConfig:
    return WorldModelConfig(image_size=preset["image_size"], chunk=chunk, codec="wan", transformer_kwargs=preset["wm_transformer"],
                            vae_kwargs=preset["vae"], prediction="velocity", residual=False, timestep_scale=1.0, rope_fps=16.0)


def bench_wm_training(dist: Dist, cfg: WorldModelConfig, args) -> dict[str, float]:
    device = dist.device
    _reset_peak(device)
    torch.manual_seed(0)
    with device:  # random init directly on the device
        model = WorldModel.from_wm_config(cfg)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    wrap_world_model(dist, model)
    wrap_world_model(dist, ema)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    b, S, K = args.wm_batch, cfg.image_size, cfg.chunk
    train = TrainConfig(batch_size=b * dist.world_size)
    rng = np.random.default_rng(dist.rank)
    batch = {"cond": rng.integers(0, 256, (b, cfg.n_cond, S, S, 3), dtype=np.uint8),
             "frames": rng.integers(0, 256, (b, K, S, S, 3), dtype=np.uint8),
             "actions": rng.uniform(-1, 1, (b, K, cfg.action_dim)).astype(np.float32),
             "rewards": (rng.uniform(size=(b, K)) > 0.5).astype(np.float32), "task": [INSTRUCTION] * b}
    gen = torch.Generator().manual_seed(0)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    step = [0]

    def one_step() -> None:
        lat = batch_to_latents(model, batch, device)
        loss, _ = training_step(model, lat, train, gen, autocast, dist)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, step[0], 0.995)
        step[0] += 1

    p50 = _timed(one_step, device, args.warmup, args.iters)
    params = sum(p.numel() for p in model.parameters())
    peak = _peak_gib(device)
    del model, ema, opt
    return {"params_b": params / 1e9, "global_batch": train.batch_size, "p50_s": p50,
            "samples_per_s": train.batch_size / p50, "peak_gib": peak}


def bench_imagination(dist: Dist, cfg: WorldModelConfig, args) -> dict[str, float]:
    device = dist.device
    _reset_peak(device)
    torch.manual_seed(0)
    with device:
        model = WorldModel.from_wm_config(cfg)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    env = WorldModelEnv(model, num_inference_steps=args.sampling_steps, horizon=10**9, device=device)
    rng = np.random.default_rng(dist.rank)
    B, S = args.imagine_batch, cfg.image_size
    env.reset(rng.integers(0, 256, (B, S, S, 3), dtype=np.uint8), INSTRUCTION, seed=dist.rank * B)
    chunks = rng.uniform(-1, 1, (B, cfg.chunk, cfg.action_dim)).astype(np.float32)
    p50 = _timed(lambda: env.step(chunks), device, args.warmup, args.iters)
    peak = _peak_gib(device)
    del env, model
    frames = B * cfg.chunk * dist.world_size
    return {"rollouts": B * dist.world_size, "p50_s_per_chunk": p50, "steps_per_s": frames / p50, "peak_gib": peak}


def build_vla(preset: dict, chunk_length: int, dtype: torch.dtype, device: torch.device):
    """A random-initialised Llava (text + vision configs of the preset) with a word-level tokenizer whose last 256 ids
    are the action bins, wrapped as `HFVLA` -- built directly on ``device`` in ``dtype``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from learning.policy.hf_vla import HFVLA, HFVLAConfig, reserved_action_tokens

    text, vision = dict(preset["text"]), dict(preset["vision"])
    words = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "in", ":", "what", "action", "should", "the", "robot", "take", "to",
             "?", "out", "pick", "up", "red", "cube"]
    filler = [f"w{i}" for i in range(text["vocab_size"] - len(words) - 256)]
    vocab = {w: i for i, w in enumerate(words + filler + reserved_action_tokens(256))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  extra_special_tokens={"image_token": "<image>"})
    px = vision["image_size"]
    images = CLIPImageProcessorPil(size={"height": px, "width": px}, crop_size={"height": px, "width": px}, do_center_crop=False)
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=vision["patch_size"],
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**vision),
                         text_config=LlamaConfig(**text, pad_token_id=0, bos_token_id=1, eos_token_id=2),
                         image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(px // vision["patch_size"]) ** 2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the target dtype: no fp32 copy of 7B parameters
    try:
        with device:
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    return HFVLA(model, processor, HFVLAConfig(chunk_length=chunk_length, instructions=(INSTRUCTION,)))


def bench_policy(dist: Dist, preset: dict, args) -> dict[str, float]:
    device = dist.device
    _reset_peak(device)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    vla = wrap_policy(dist, build_vla(preset, args.policy_chunk, dtype, device))
    params = sum(p.numel() for p in vla.parameters())
    B = args.policy_batch
    images = np.random.default_rng(dist.rank).integers(0, 256, (B, 256, 256, 3), dtype=np.uint8)
    gen = torch.Generator(device=device).manual_seed(dist.rank)
    vla.eval()
    tokens = vla.sample(images, INSTRUCTION, temperature=1.6, generator=gen)[1]
    t_sample = _timed(lambda: vla.sample(images, INSTRUCTION, temperature=1.6, generator=gen), device, args.warmup, args.iters)
    vla.train()

    def logprob_step() -> None:
        vla.token_log_probs(images, INSTRUCTION, tokens, temperature=1.6).mean().backward()
        vla.zero_grad(set_to_none=True)

    t_lp = _timed(logprob_step, device, args.warmup, args.iters)
    peak = _peak_gib(device)
    del vla
    W = dist.world_size
    return {"params_b": params / 1e9, "batch": B * W, "sample_p50_s": t_sample, "sample_per_s": B * W / t_sample,
            "logprob_train_p50_s": t_lp, "logprob_train_per_s": B * W / t_lp, "peak_gib": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--chunk", type=int, default=None, help="world-model frames per call (paper: 24; tiny: 4)")
    p.add_argument("--wm-batch", type=int, default=None, help="training windows per rank (paper: 4; tiny: 2)")
    p.add_argument("--imagine-batch", type=int, default=8, help="imagined rollouts per rank (GRPO: group 8)")
    p.add_argument("--sampling-steps", type=int, default=2, help="Euler steps per imagined chunk")
    p.add_argument("--policy-batch", type=int, default=8, help="policy samples per rank")
    p.add_argument("--policy-chunk", type=int, default=8, help="K actions per policy chunk (OpenVLA-OFT: 8)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="bf16: FSDP2 mixed precision for training (under torchrun on GPUs), bf16 weights for imagination and "
                        "the policy (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=None, help="timed iterations per phase (paper: 5; tiny: 2)")
    p.add_argument("--skip", nargs="*", default=[], choices=("train", "imagine", "policy"))
    args = p.parse_args()
    paper = args.preset == "paper"
    args.chunk = args.chunk or (24 if paper else 4)
    args.wm_batch = args.wm_batch or (4 if paper else 2)
    args.iters = args.iters or (5 if paper else 2)
    cuda = torch.cuda.is_available()
    if paper and not cuda:
        print("bench/gpu.py: --preset paper needs a CUDA GPU (a 2B world model and a 7B policy); --preset tiny is the CPU smoke "
              "check", file=sys.stderr)
        return 2
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    if args.dtype == "bf16" and not cuda:
        print("bench/gpu.py: --dtype bf16 is a GPU setting (CPU autocast does not cover the models' fp32 norms); use fp32 on CPU",
              file=sys.stderr)
        return 2
    if not cuda:
        torch.set_num_threads(1)  # the shared 2-core build machines: one thread per process
    preset = PRESETS[args.preset]
    # --dtype bf16 under torchrun: FSDP2 computes in bf16 (fp32 master weights); a plain run on a GPU uses the training
    # step's bf16 autocast
    bf16_fsdp = args.dtype == "bf16" and launched_by_torchrun()
    dist_cfg = {"mixed_precision": "bf16" if bf16_fsdp else None, "activation_checkpointing": args.activation_checkpointing}
    with distributed_session(dist_cfg) as dist:
        if not dist.initialized and cuda:
            dist.device = torch.device("cuda")
        cfg = world_model_config(preset, args.chunk)
        rows, heads = [], {}
        if "train" not in args.skip:
            r = bench_wm_training(dist, cfg, args)
            rows.append(("world-model training", _count(r["params_b"] * 1e9), f"global batch {r['global_batch']}", f"{r['p50_s']:.3f} s/step",
                         f"{r['samples_per_s']:.2f} samples/s", f"{r['peak_gib']:.1f}"))
            heads.update(wm_train_samples_per_s=r["samples_per_s"], wm_train_peak_gib=r["peak_gib"], wm_params_b=r["params_b"])
        if "imagine" not in args.skip:
            r = bench_imagination(dist, cfg, args)
            rows.append(("imagination", f"{args.sampling_steps} Euler steps", f"{r['rollouts']} rollouts x {cfg.chunk} frames",
                         f"{r['p50_s_per_chunk']:.3f} s/chunk", f"{r['steps_per_s']:.1f} env steps/s", f"{r['peak_gib']:.1f}"))
            heads.update(imagined_steps_per_s=r["steps_per_s"], imagine_s_per_chunk=r["p50_s_per_chunk"], imagine_peak_gib=r["peak_gib"])
        if "policy" not in args.skip:
            r = bench_policy(dist, preset, args)
            rows.append(("policy sample", _count(r["params_b"] * 1e9), f"batch {r['batch']}", f"{r['sample_p50_s']:.3f} s/call",
                         f"{r['sample_per_s']:.2f} samples/s", f"{r['peak_gib']:.1f}"))
            rows.append(("policy log_prob fwd+bwd", "", f"batch {r['batch']}", f"{r['logprob_train_p50_s']:.3f} s/call",
                         f"{r['logprob_train_per_s']:.2f} samples/s", ""))
            heads.update(policy_sample_per_s=r["sample_per_s"], policy_logprob_train_per_s=r["logprob_train_per_s"],
                         policy_peak_gib=r["peak_gib"], policy_params_b=r["params_b"])
        if dist.is_main:
            card = torch.cuda.get_device_name(dist.device) if cuda else "cpu"
            print_table(f"bench/gpu.py --preset {args.preset}: {dist.world_size} rank(s) on {card}, {args.dtype}"
                        f"{', activation checkpointing' if args.activation_checkpointing else ''}",
                        ["phase", "size", "batch", "median", "throughput", "peak GiB/rank"], rows)
            print(" ".join([f"{k}={v:.4g}" for k, v in heads.items()] + [f"ranks={dist.world_size}", f"device={card.replace(' ', '_')}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
