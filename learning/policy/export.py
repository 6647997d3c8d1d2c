"""Export the deployable policy: ONNX graph + manifest (`robot.policy_artifact`), checked against PyTorch.

The graph is the compact VLA's greedy chunk, one forward pass, no decoding loop::

    image               uint8 (1, H, W, 3)   RGB from the rig's camera (normalisation is inside the graph)
    instruction_tokens  int64 (1, L)         the manifest's instruction_tokens (the robot has no tokenizer)
    state               float32 (1, S)       the manifest's ``state`` features in raw units (only for a policy
                                             with a state input; normalisation is inside the graph)
 -> action_chunk        float32 (1, K, 7)    in [-1, 1]

Before the artifact is written, onnxruntime and PyTorch run the same inputs (real frames and states when
given, else seeded random frames around the training mean state) and must pick the same action bins; the max abs difference of the chunks is reported
in the manifest's ``extra.onnx_check``. A differing bin is accepted only where PyTorch's own logits are a tie
(within ``tie_tol``): float rounding may then break it either way, which is not an export error.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from robot.policy_artifact import MODEL_FILE, PolicyManifest, write_artifact
from robot.console import print_table

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch policy, or the policy cannot be exported."""


class _GreedyGraph(torch.nn.Module):
    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, image: torch.Tensor, instruction_tokens: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        return self.policy.greedy_chunk(image, instruction_tokens, state)


def check_onnx_agreement(policy, onnx_path: Path, images: np.ndarray, tokens: np.ndarray, states: np.ndarray | None = None,
                         tie_tol: float = 1e-4) -> dict[str, Any]:
    """Run ``images`` (B, H, W, 3) [with ``states`` (B, S)] one by one through onnxruntime and PyTorch; raise
    ExportError on a real mismatch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tok = torch.from_numpy(tokens[None])
    max_diff, ties = 0.0, 0
    with torch.no_grad():
        for b, img in enumerate(images):
            x = torch.from_numpy(np.ascontiguousarray(img[None]))
            feeds = {"image": x.numpy(), "instruction_tokens": tokens[None]}
            st = None
            if states is not None:
                feeds["state"] = np.ascontiguousarray(states[b:b + 1], dtype=np.float32)
                st = torch.from_numpy(feeds["state"])
            logits = policy.logits(x, tok, st)[0]  # (N, V)
            ref = policy.tokens_to_actions(logits.argmax(-1)).numpy()  # (K, D)
            got = sess.run(["action_chunk"], feeds)[0][0]
            diff = np.abs(ref - got)
            max_diff = max(max_diff, float(diff.max()))
            bad = np.flatnonzero(diff.reshape(-1) > 1e-6)
            if bad.size:
                t_ort = policy.actions_to_tokens(torch.from_numpy(got)).reshape(-1)
                gap = (logits.max(-1).values - logits.gather(-1, t_ort[:, None]).squeeze(-1))[bad]
                if float(gap.max()) > tie_tol:
                    raise ExportError(f"onnxruntime and PyTorch disagree on {bad.size} action token(s) (logit gap "
                                      f"{float(gap.max()):.2e} > tie_tol {tie_tol}): the exported graph is wrong")
                ties += int(bad.size)
    return {"inputs": int(len(images)), "max_abs_diff": max_diff, "near_ties": ties}


def export_policy(policy, out_folder: str | Path, version: str, instruction: str | None = None, camera: str | None = None,
                  control_hz: float | None = None, check_images: np.ndarray | None = None, check_inputs: int = 16,
                  seed: int = 0, overwrite: bool = False, extra: dict[str, Any] | None = None,
                  check_states: np.ndarray | None = None) -> PolicyManifest:
    """Write ``out_folder`` (policy.onnx + manifest.json) for the compact VLA ``policy``; returns the manifest.

    ``check_images`` (B, H, W, 3) uint8 are real frames to compare on, with their robot states ``check_states``
    (B, S) for a policy with a state input (None: the training mean state); ``check_inputs`` seeded random
    frames (and states drawn around the training statistics) are added. The folder appears only when complete
    (written beside it, then renamed).
    """
    from learning.policy.compact import CompactVLA

    if not isinstance(policy, CompactVLA):
        raise ExportError(f"export: {type(policy).__name__} decodes autoregressively and runs where torch runs; "
                          "the robot's ONNX artifact is made from the compact VLA (policy=compact)")
    out = Path(out_folder)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {out} exists; choose a new folder per policy version (or overwrite=true)")
    policy = policy.eval().cpu()
    instruction = instruction or policy.default_instruction
    tokens = np.asarray(policy.word_tokenizer.encode(instruction), dtype=np.int64)  # (L,)
    H = W = policy.config.image_size
    K, D = policy.chunk_length, policy.action_dim
    feats = tuple(policy.state_features)
    S = len(feats)

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        mean = np.asarray(policy.config.state_mean or [0.0] * S, np.float32)
        std = np.asarray(policy.config.state_std or [1.0] * S, np.float32)
        example = (torch.zeros(1, H, W, 3, dtype=torch.uint8), torch.from_numpy(tokens[None]))
        names = ["image", "instruction_tokens"]
        if S:
            example += (torch.from_numpy(mean[None].copy()),)
            names.append("state")
        # The exporter logs every graph pass at INFO; our own log line is enough.
        for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        onnx_program = torch.onnx.export(_GreedyGraph(policy).eval(), example, dynamo=True, input_names=names,
                                         output_names=["action_chunk"], verbose=False)
        onnx_program.save(str(tmp / MODEL_FILE))
        export_s = time.perf_counter() - t0
        rng = np.random.default_rng(seed)
        imgs = rng.integers(0, 256, size=(check_inputs, H, W, 3), dtype=np.uint8)
        states = (mean + std * rng.standard_normal((check_inputs, S))).astype(np.float32) if S else None
        if check_images is not None:
            real = np.asarray(check_images, dtype=np.uint8).reshape(-1, H, W, 3)
            imgs = np.concatenate([real, imgs])
            if S:
                real_states = np.broadcast_to(mean, (len(real), S)) if check_states is None else np.asarray(check_states, np.float32).reshape(-1, S)
                states = np.concatenate([real_states, states]).astype(np.float32)
        check = check_onnx_agreement(policy, tmp / MODEL_FILE, imgs, tokens, states)
        log.info("exported in %.1f s; onnxruntime vs torch on %d inputs: max abs diff %.2e", export_s, check["inputs"], check["max_abs_diff"])
        cfg = policy.config
        manifest = PolicyManifest(
            policy_version=version, camera=camera or cfg.camera, image_size=(H, W), instruction=instruction,
            instruction_tokens=tuple(int(t) for t in tokens), chunk_length=K,
            action_low=tuple([policy.action_tokenizer.low] * D), action_high=tuple([policy.action_tokenizer.high] * D),
            control_hz=float(control_hz or cfg.control_hz),
            inputs={"image": {"shape": [1, H, W, 3], "dtype": "uint8"}, "instruction_tokens": {"shape": [1, int(len(tokens))], "dtype": "int64"},
                    **({"state": {"shape": [1, S], "dtype": "float32"}} if S else {})},
            state=feats,
            outputs={"action_chunk": {"shape": [1, K, D], "dtype": "float32"}},
            action_dim=D,
            normalization={"image_mean": list(cfg.image_mean), "image_std": list(cfg.image_std), "image_scale": 1 / 255,
                           "inside_graph": True, "action_bins": {"n_bins": policy.n_bins, "low": policy.action_tokenizer.low,
                                                                 "high": policy.action_tokenizer.high},
                           "action_stats": cfg.action_stats or {},
                           **({"state": {"features": list(feats), "mean": mean.tolist(), "std": std.tolist(), "inside_graph": True}} if S else {})},
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            extra={"onnx_check": check, "policy_class": type(policy).__name__, "params_m": round(policy.num_parameters_m(), 3),
                   "torch": torch.__version__, "camera_info": cfg.camera_info, **(extra or {})},
        )
        final = write_artifact(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def store_check_inputs(store, state_features: tuple[str, ...], episodes: int = 8) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Real frames (about 4 per episode of the first ``episodes``) and their robot states, to check an export on."""
    frames, states = [], []
    for i in range(min(len(store), episodes)):
        every = max(1, store.row(i)["length"] // 4)
        frames.append(store.frames(i)[::every])
        states.append(store.states(i, state_features)[::every])
    if not frames:
        return None, None
    return np.concatenate(frames), (np.concatenate(states) if state_features else None)


def main(cfg: DictConfig, mode: str | None = None) -> int:
    from learning.policy import load_policy

    policy = load_policy(cfg.policy)
    check_images = check_states = None
    if cfg.check_store:
        from learning.data.store import EpisodeStore

        store = EpisodeStore(cfg.check_store, create=False)
        check_images, check_states = store_check_inputs(store, policy.state_features)
    m = export_policy(policy, cfg.out, cfg.version, instruction=cfg.instruction, camera=cfg.camera, control_hz=cfg.control_hz,
                      check_images=check_images, check_states=check_states, check_inputs=cfg.check_inputs, overwrite=cfg.overwrite)
    c = m.extra["onnx_check"]
    print_table(f"policy artifact -> {cfg.out}", ["what", "value"], [
        ("policy version", m.policy_version),
        ("instruction", f"{m.instruction!r} -> {list(m.instruction_tokens)}"),
        ("image", f"{m.camera} {m.image_size[0]}x{m.image_size[1]} uint8"),
        ("robot state", ", ".join(m.state) or "none (images only)"),
        ("action chunk", f"{m.chunk_length} x {m.action_dim} at {m.control_hz:g} Hz"),
        ("onnxruntime vs torch", f"max abs diff {c['max_abs_diff']:.2e} on {c['inputs']} inputs ({c['near_ties']} near-tie tokens)"),
        ("policy.onnx sha256", m.sha256[MODEL_FILE][:16] + "..."),
    ])
    return 0
