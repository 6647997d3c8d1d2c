"""Policy speed: the deployed policy's act() in PyTorch eager vs onnxruntime (CPU), and the sample() +
log_prob() throughput at batch 64 that GRPO needs.

    .venv/bin/python bench/policy.py [--policy runs/sft/PickCube-v1/policy] [--reps 300] [--threads 1]

Without --policy, the default compact VLA (the `wvl sft` preset's architecture, random weights: speed does
not depend on the weights) is used. act() is timed the way each side is called in deployment: PyTorch
`policy.act(frame, instruction)` vs the robot's `PolicyRuntime.act(frame)` (onnxruntime + its checks), the two
interleaved call by call so machine noise hits both alike; both get ``--threads`` CPU threads. Percentiles,
not means. Last line: ``onnx_speedup=… onnx_p99_ms=… torch_p99_ms=… sample_logprob_per_s_b64=…``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.policy import load_policy  # noqa: E402
from learning.policy.compact import CompactVLA  # noqa: E402
from learning.policy.export import export_policy  # noqa: E402
from learning.policy.tokenizers import WordTokenizer  # noqa: E402
from robot.console import print_table  # noqa: E402
from robot.policy_runtime import PolicyRuntime, RigSpec  # noqa: E402
from robot.state import DEFAULT_POLICY_STATE  # noqa: E402

INSTRUCTION = "pick up the red cube and move it to the green goal"


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", help="a saved compact policy folder (default: the preset architecture, random weights)")
    ap.add_argument("--reps", type=int, default=300, help="act() calls per side")
    ap.add_argument("--batch-reps", type=int, default=10, help="sample+log_prob repetitions at batch 64")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch and onnxruntime alike")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    if args.policy:
        policy = load_policy(args.policy)
        instruction = policy.default_instruction
    else:
        torch.manual_seed(0)
        # the SFT default: the robot state (TCP position + gripper opening) is an input beside the frame
        policy = CompactVLA(vocab=WordTokenizer.build([INSTRUCTION]).vocab, instructions=[INSTRUCTION],
                            state_features=list(DEFAULT_POLICY_STATE), state_mean=[0.0, 0.0, 0.1, 0.5],
                            state_std=[0.05, 0.05, 0.05, 0.5]).eval()
        instruction = INSTRUCTION
    H = policy.config.image_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (64, H, H, 3), dtype=np.uint8)
    S = len(policy.state_features)
    states = (rng.normal(size=(64, S)) * 0.05 + [0.0, 0.0, 0.1, 0.5][:S]).astype(np.float32) if S else None

    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_policy(policy, Path(tmp) / "artifact", version="bench", check_inputs=8)
        runtime = PolicyRuntime(RigSpec(camera=manifest.camera, image_size=(H, H), control_hz=manifest.control_hz),
                                providers=["CPUExecutionProvider"], threads=args.threads)
        runtime.load(Path(tmp) / "artifact")
        runtime.reset()

        torch_ms, onnx_ms = [], []
        with torch.no_grad():
            for i in range(args.reps + 20):  # the first 20 of each are warm-up
                img = frames[i % len(frames)]
                st = None if states is None else states[i % len(frames)]
                t0 = time.perf_counter()
                a_torch = policy.act(img, instruction, states=None if st is None else st[None])
                t1 = time.perf_counter()
                a_onnx = runtime.act(img, st) if st is not None else runtime.act(img)
                t2 = time.perf_counter()
                if i >= 20:
                    torch_ms.append((t1 - t0) * 1000)
                    onnx_ms.append((t2 - t1) * 1000)
                if i < 20:
                    assert np.abs(a_torch[0].numpy() - a_onnx).max() <= 1e-6, "onnxruntime and torch disagree"

    # GRPO: sample a group of chunks and recompute their log-probs (both forward passes, no grad), batch 64.
    B = 64
    gen = torch.Generator().manual_seed(0)
    grpo_s, train_s = [], []
    for i in range(args.batch_reps + 2):
        t0 = time.perf_counter()
        _, tokens, _ = policy.sample(frames, instruction, temperature=1.6, generator=gen, states=states)
        with torch.no_grad():
            policy.log_prob(frames, instruction, tokens, temperature=1.6, states=states)
        t1 = time.perf_counter()
        loss = -policy.log_prob(frames, instruction, tokens, temperature=1.6, states=states).mean()  # the update's pass, with grad
        loss.backward()
        policy.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if i >= 2:
            grpo_s.append(t1 - t0)
            train_s.append(t2 - t1)

    speedup = pct(torch_ms, 50) / pct(onnx_ms, 50)
    per_s = B / pct(grpo_s, 50)
    print_table(f"policy speed ({policy.num_parameters_m():.2f} M params, {H}x{H} frames, K={policy.chunk_length}, "
                f"{args.threads} thread(s))", ["what", "p50", "p99", "unit"], [
        ("act(): PyTorch eager", f"{pct(torch_ms, 50):.3f}", f"{pct(torch_ms, 99):.3f}", "ms"),
        ("act(): onnxruntime CPU (PolicyRuntime)", f"{pct(onnx_ms, 50):.3f}", f"{pct(onnx_ms, 99):.3f}", "ms"),
        ("onnxruntime speed-up (p50)", f"{speedup:.2f}", "", "x"),
        ("10 Hz control period", "100", "", "ms"),
        ("sample + log_prob, batch 64 (no grad)", f"{per_s:.1f}", f"{B / pct(grpo_s, 99):.1f}", "chunks/s (p99 = slowest)"),
        ("log_prob + backward, batch 64", f"{B / pct(train_s, 50):.1f}", "", "chunks/s"),
    ])
    print(f"onnx_speedup={speedup:.2f} onnx_p99_ms={pct(onnx_ms, 99):.3f} torch_p99_ms={pct(torch_ms, 99):.3f} "
          f"sample_logprob_per_s_b64={per_s:.1f}")


if __name__ == "__main__":
    main()
