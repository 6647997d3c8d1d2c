"""Benchmark of the world model: imagination speed, training speed, quality vs sampling steps, codec choice.

    # speed of the tiny default config on this machine (random weights: speed does not depend on them), with its
    # robot-state head and, side by side in the same run, the same model without one (what the head costs)
    .venv/bin/python bench/world_model.py --threads 1
    # quality vs Euler steps of a trained checkpoint on held-out episodes
    .venv/bin/python bench/world_model.py --threads 1 --checkpoint runs/wm/v0 --quality data/sans/heldout --classifier-store data/sans/pickcube
    # tiny Wan VAE vs the patch codec (trains the VAE for --vae-seconds on the store's frames)
    .venv/bin/python bench/world_model.py --threads 1 --codec data/sans/pickcube
    # on a GPU machine: the 2B-sized Cosmos-Predict2 config, random init, bf16, 256x256 frames
    python bench/world_model.py --preset cosmos2b --device cuda --batch-sizes 1 8 --chunk 24

Prints tables; the LAST line holds the headline figures:
``imagined_steps_per_s_b1=... imagined_steps_per_s_b32=... train_samples_per_s=... [state_head_cost_imagine_b32=...
state_head_cost_train=...]`` (an imagined step = one frame of one rollout; figures from the median call; a cost is
the time with the state head / without it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.world_model.config import TrainConfig, WorldModelConfig  # noqa: E402
from learning.world_model.env import WorldModelEnv  # noqa: E402
from learning.world_model.model import WorldModel, load_world_model  # noqa: E402
from learning.world_model.train import training_step  # noqa: E402
from robot.console import print_table  # noqa: E402

# diffusers scripts/convert_cosmos_to_diffusers.py: "Cosmos-2.0-Diffusion-2B-Video2World" (in/out channels derived)
COSMOS_2B_TRANSFORMER = {
    "num_attention_heads": 16, "attention_head_dim": 128, "num_layers": 28, "mlp_ratio": 4.0, "text_embed_dim": 1024,
    "adaln_lora_dim": 256, "max_size": [128, 240, 240], "patch_size": [1, 2, 2], "rope_scale": [1.0, 3.0, 3.0],
    "concat_padding_mask": True, "extra_pos_embed_type": None,
}
WAN21_VAE = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "temperal_downsample": [False, True, True]}


def build_model(args, state_head: bool = True) -> WorldModel:
    if args.checkpoint:
        return load_world_model(args.checkpoint, device=args.device)
    no_head = {} if state_head else {"state_features": ()}
    if args.preset == "cosmos2b":
        cfg = WorldModelConfig(image_size=args.image_size or 256, chunk=args.chunk, codec="wan", transformer_kwargs=COSMOS_2B_TRANSFORMER,
                               vae_kwargs=WAN21_VAE, prediction="velocity", residual=False, timestep_scale=1.0, rope_fps=16.0, **no_head)
    else:
        cfg = WorldModelConfig(image_size=args.image_size or 64, chunk=args.chunk, **no_head)
    torch.manual_seed(0)
    model = WorldModel.from_wm_config(cfg).to(args.device)
    return model.to(torch.bfloat16) if args.dtype == "bf16" else model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_imagination(model: WorldModel, args, B: int) -> dict[str, float]:
    cfg = model.wm_config
    rng = np.random.default_rng(0)
    env = WorldModelEnv(model, num_inference_steps=args.steps, horizon=10**9, device=args.device, reward_from=args.reward_from)
    states = rng.uniform(-0.1, 0.1, (B, len(cfg.state_features))).astype(np.float32) if model.state_net is not None else None
    env.reset(rng.integers(0, 256, (B, cfg.image_size, cfg.image_size, 3), dtype=np.uint8), "pick up the red cube", states=states)
    chunks = rng.uniform(-1, 1, (args.calls + 1, B, cfg.chunk, cfg.action_dim)).astype(np.float32)
    times = []
    for i in range(args.calls + 1):
        _sync(args.device)
        t0 = time.perf_counter()
        env.step(chunks[i])
        _sync(args.device)
        if i > 0:  # the first call warms up
            times.append(time.perf_counter() - t0)
    p50, p90 = np.percentile(times, [50, 90])
    return {"batch": B, "p50_s": p50, "p90_s": p90, "steps_per_s": B * cfg.chunk / p50}


def bench_training(model: WorldModel, args) -> dict[str, float]:
    cfg = model.wm_config
    B = args.train_batch
    g = torch.Generator().manual_seed(0)
    S = cfg.image_size
    cond, x0 = model.encode_window(torch.randint(0, 256, (B, cfg.n_cond, S, S, 3), generator=g, dtype=torch.uint8),
                                   torch.randint(0, 256, (B, cfg.chunk, S, S, 3), generator=g, dtype=torch.uint8))
    lat = {"cond": cond, "x0": x0, "actions": torch.rand(B, cfg.chunk, cfg.action_dim, generator=g).to(args.device) * 2 - 1,
           "rewards": (torch.rand(B, cfg.chunk, generator=g) > 0.5).float().to(args.device), "text_ids": model.tokenize(["pick up the red cube"] * B)}
    if model.state_net is not None:
        lat["state_delta"] = torch.randn(B, cfg.chunk, len(cfg.state_features), generator=g).to(args.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train = TrainConfig()
    autocast = torch.bfloat16 if args.device.startswith("cuda") else None
    times = []
    for i in range(args.train_steps + 1):
        _sync(args.device)
        t0 = time.perf_counter()
        loss, _ = training_step(model, lat, train, g, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(args.device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    model.eval()
    p50 = float(np.median(times))
    return {"batch": B, "p50_s": p50, "samples_per_s": B / p50}


def bench_quality(args) -> list[dict]:
    from learning.eval.success_classifier import train_success_classifier
    from learning.eval.world_model import evaluate_world_model

    model = load_world_model(args.checkpoint)
    clf = train_success_classifier([args.classifier_store], steps=args.classifier_steps)
    rows = []
    for n in args.quality_steps:
        t0 = time.perf_counter()
        r = evaluate_world_model(model, args.quality, classifier=clf, num_inference_steps=n, seed=0, reward_from=args.reward_from)
        rows.append({"num_inference_steps": n, "reward_from": args.reward_from, "reward_alignment": r["reward_alignment"], "visual_alignment": r["visual_alignment"],
                     "psnr": r["psnr"], "ssim": r["ssim"], "episodes": r["episodes"], "wall_s": round(time.perf_counter() - t0, 1),
                     "classifier_real_accuracy": r["classifier_real_accuracy"]})
    print_table(f"quality vs Euler steps: {args.checkpoint} on {args.quality}",
                ["steps", "reward align", "visual align", "PSNR dB", "SSIM", "episodes", "wall s"],
                [(r["num_inference_steps"], r["reward_alignment"], r["visual_alignment"], r["psnr"], r["ssim"], r["episodes"], r["wall_s"]) for r in rows])
    return rows


def bench_codec(args) -> dict:
    """Tiny Wan VAE vs patch codec at 64x64: cost per imagined chunk and reconstruction quality."""
    from diffusers import AutoencoderKLWan

    from learning.data.store import EpisodeStore
    from learning.data.windows import WindowDataset, WindowSpec
    from learning.eval.video_metrics import psnr
    from learning.world_model.codec import frames_to_unit, unit_to_frames

    store = EpisodeStore(args.codec, create=False)
    ds = WindowDataset(store, WindowSpec(chunk=8), list(range(min(len(store), 60))))
    rng = np.random.default_rng(0)
    split = int(0.8 * len(ds))

    def videos(idx):  # (B, 9, H, W, 3): cond + next 8 frames
        b = ds.batch(idx)
        return torch.from_numpy(np.concatenate([b["cond"], b["frames"]], 1))

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
    n_params = sum(p.numel() for p in vae.parameters())
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.vae_seconds:
        x = frames_to_unit(videos(rng.integers(0, split, 8)))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = torch.mean((rec - x) ** 2) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    vae.eval()
    with torch.no_grad():
        held = videos(np.arange(split, min(len(ds), split + 64)))
        rec = unit_to_frames(vae.decode(vae.encode(frames_to_unit(held)).latent_dist.mode()).sample)
        wan_psnr = float(np.mean([psnr(rec[i].numpy(), held[i].numpy()).mean() for i in range(len(held))]))
        x32 = frames_to_unit(videos(rng.integers(0, len(ds), 32)))
        te = time.perf_counter()
        z = vae.encode(x32).latent_dist.mode()
        enc = time.perf_counter() - te
        td = time.perf_counter()
        vae.decode(z)
        dec = time.perf_counter() - td
    # transformer cost per call at batch 32 with each latent layout (same tiny transformer sizes)
    out = {"wan_vae_params": n_params, "wan_vae_train_steps": steps, "wan_vae_train_s": args.vae_seconds,
           "wan_vae_heldout_psnr_db": wan_psnr, "wan_encode_b32_s": enc, "wan_decode_b32_s": dec, "patch_psnr_db": 100.0}
    for name, cfg in (("patch", WorldModelConfig()),
                      ("wan", WorldModelConfig(codec="wan", residual=False, vae_kwargs=dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                                                            temperal_downsample=[False, True, True]),
                                               transformer_kwargs={**WorldModelConfig().transformer_kwargs, "patch_size": [1, 2, 2]}))):
        m = WorldModel.from_wm_config(cfg).eval()
        c = torch.randn(32, cfg.latent_channels, cfg.cond_latent_frames, cfg.latent_size, cfg.latent_size)
        x = torch.randn(m.noise_shape(32))
        a, ids = torch.rand(32, 8, 7), m.tokenize(["pick"] * 32)
        with torch.no_grad():
            m(x, torch.rand(32), c, a, ids)
            ts = []
            for _ in range(3):
                t1 = time.perf_counter()
                m(x, torch.rand(32), c, a, ids)
                ts.append(time.perf_counter() - t1)
        tokens = (cfg.cond_latent_frames + cfg.pred_latent_frames) * (cfg.latent_size // cfg.transformer_kwargs["patch_size"][1]) ** 2
        out[f"{name}_tokens"] = tokens
        out[f"{name}_transformer_fwd_b32_s"] = float(np.median(ts))
    k = args.steps + (args.reward_from == "clean")  # transformer calls per imagined chunk
    out["patch_chunk_b32_s"] = k * out["patch_transformer_fwd_b32_s"]
    out["wan_chunk_b32_s"] = k * out["wan_transformer_fwd_b32_s"] + enc / 9 + dec  # encode: only the cond frame per call
    print_table("codec at 64x64 (batch 32, one imagined chunk of 8 frames)", ["codec", "tokens", "chunk s", "recon PSNR dB", "needs training"], [
        ("patch (pixel-unshuffle)", out["patch_tokens"], out["patch_chunk_b32_s"], "lossless", "no"),
        (f"tiny Wan VAE ({n_params / 1e6:.2f}M)", out["wan_tokens"], out["wan_chunk_b32_s"], wan_psnr, f"yes ({steps} steps in {args.vae_seconds:.0f} s)"),
    ])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a trained checkpoint (default: random init of the preset)")
    p.add_argument("--preset", choices=("tiny", "cosmos2b"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="Euler steps per imagined chunk")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quality", help="held-out store: quality vs Euler steps (needs --checkpoint, --classifier-store)")
    p.add_argument("--quality-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--reward-from", choices=("last_step", "clean"), default="last_step")
    p.add_argument("--classifier-store")
    p.add_argument("--classifier-steps", type=int, default=600)
    p.add_argument("--codec", help="store: compare a tiny Wan VAE with the patch codec")
    p.add_argument("--vae-seconds", type=float, default=120.0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"device": args.device, "threads": torch.get_num_threads(), "preset": args.preset, "checkpoint": args.checkpoint}
    if args.quality:
        results["quality_vs_steps"] = bench_quality(args)
    if args.codec:
        results["codec"] = bench_codec(args)
    model = build_model(args)
    # the same model without its state head, timed in the same run (the machine is noisy: ratios side by side)
    bare = build_model(args, state_head=False) if model.state_net is not None and not args.checkpoint else None
    with torch.no_grad():
        imag = [bench_imagination(model, args, B) for B in args.batch_sizes]
        imag_bare = [bench_imagination(bare, args, B) for B in args.batch_sizes] if bare is not None else []
    train = bench_training(model, args)
    train_bare = bench_training(bare, args) if bare is not None else None
    cfg = model.wm_config
    head = f"state head ({len(cfg.state_features)} features)" if model.state_net is not None else "no state head"
    rows = [(f"imagined chunk ({cfg.chunk} frames/rollout), {head}", r["batch"], r["p50_s"], r["p90_s"], f"{r['steps_per_s']:.1f} steps") for r in imag]
    rows += [("training step, " + head, train["batch"], train["p50_s"], "-", f"{train['samples_per_s']:.1f} samples")]
    if bare is not None:
        rows += [(f"imagined chunk ({cfg.chunk} frames/rollout), no state head", r["batch"], r["p50_s"], r["p90_s"], f"{r['steps_per_s']:.1f} steps")
                 for r in imag_bare]
        rows += [("training step, no state head", train_bare["batch"], train_bare["p50_s"], "-", f"{train_bare['samples_per_s']:.1f} samples")]
    print_table(f"world model speed ({args.preset}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {cfg.image_size}px, "
                f"K={cfg.chunk}, {args.steps} Euler steps, reward from {args.reward_from}, {args.device} {args.dtype}, {torch.get_num_threads()} threads)",
                ["what", "batch", "p50 s", "p90 s", "per s"], rows)
    results.update({"imagination": imag, "training": train, "imagination_no_state_head": imag_bare, "training_no_state_head": train_bare})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    by_b = {r["batch"]: r["steps_per_s"] for r in imag}
    last = [f"imagined_steps_per_s_b{b}={v:.1f}" for b, v in by_b.items()] + [f"train_samples_per_s={train['samples_per_s']:.1f}"]
    if bare is not None:
        last += [f"state_head_cost_imagine_b{r['batch']}={r['p50_s'] / rb['p50_s']:.3f}" for r, rb in zip(imag, imag_bare)]
        last += [f"state_head_cost_train={train['p50_s'] / train_bare['p50_s']:.3f}"]
    print(" ".join(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
