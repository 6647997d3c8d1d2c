"""World-model quality levers, measured the way the loop uses the world model (issue 15, item 3).

Each variant trains world model v0 on a SANS store, refines it on real policy rollouts exactly as a loop iteration
does (`wvl loop`'s refine stage: 300 steps, lr 5e-4, batches half SANS, half rollouts), and is judged on HELD-OUT
policy rollouts (other seeds, never trained on) by replaying their real actions from their first frame
(`evaluate_world_model`): per-class reward / visual alignment, balanced accuracy and the reward head's AUC (does
a real success get a higher imagined reward than a real failure, whatever the threshold?).

    .venv/bin/python bench/wm_levers.py --sans <SANS store> --refine <rollout store> --heldout <rollout store> \
        --classifier <success classifier folder> --out bench/results/wm_levers --variants baseline,cond_noise

Results accumulate in <out>/results.jsonl (one line per variant; a variant already there is not re-run); the
table of every variant so far is printed, and as the last line name=value pairs (balanced accuracy per variant).
"xy response" (`action_response`) says whether imagination follows the commanded direction at all.
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

from learning.eval.world_model import evaluate_world_model  # noqa: E402
from learning.world_model.train import train_world_model  # noqa: E402
from robot.console import print_table  # noqa: E402

# The default loop preset's world model (learning/conf/preset/default.yaml) and each lever as a change to it.
BASE = {"model": {"image_size": 64, "chunk": 8, "n_cond": 1}, "train": {"batch_size": 16, "steps": 1500}}
REFINE = {"steps": 300, "lr": 5e-4, "warmup_steps": 20, "mix": [0.5, 0.5]}
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "cond_noise": {"train": {"cond_noise": 0.3}},  # noised conditioning latents: robust to its own blurred frames
    "steps_x3": {"train": {"steps": 4500}},  # training length
    "reward_weight_x4": {"train": {"reward_weight": 4.0}},  # lambda_0: more of the gradient for the reward head
    "t_shift_3": {"train": {"t_shift": 3.0}},  # more training at high noise, where the actions decide the frames
    "own_frames": {"train": {"own_frames": 0.5}},  # half the windows conditioned on the model's own generated frame
    "action_cumulative": {"model": {"action_cumulative": True}},  # each frame also gets the translation commanded so far
    "action_cumulative_x4": {"model": {"action_cumulative": True}, "train": {"steps": 6000}},  # ... and 4x the training
}
EVAL = {"num_inference_steps": 2, "reward_from": "last_step"}  # as GRPO imagines (learning/conf/preset/default.yaml)
RESPONSE_EPISODES, RESPONSE_CHUNKS = 24, 3


def action_response(ckpt: Path, store_path: str) -> float:
    """Does imagination follow the commanded direction? Mean |frame imagined with the real actions - frame imagined
    with their x and y mirrored| (grey levels, 0-255) over the first chunks of held-out episodes, same noise. The
    real arm ends up centimetres apart; a model that ignores the xy commands scores near 0."""
    from learning.data.store import EpisodeStore
    from learning.eval.world_model import replay_actions
    from learning.world_model.env import WorldModelEnv

    store = EpisodeStore(store_path, create=False)
    idx = list(range(min(RESPONSE_EPISODES, len(store))))
    env = WorldModelEnv(ckpt, seed=0, horizon=10**9, **EVAL)
    K = env.chunk
    chunks = np.stack([replay_actions(np.asarray(store.step_table(i, ["action"]).column("action").to_pylist(), np.float32),
                                      RESPONSE_CHUNKS, K) for i in idx])
    mirrored = chunks.copy()
    mirrored[..., :2] *= -1
    imagined = []
    for ch in (chunks, mirrored):
        env.reset(np.stack([store.frames(i)[0] for i in idx]), store.row(0)["tasks"][0], seed=idx)
        imagined.append(np.concatenate([env.step(ch[:, c])[0] for c in range(RESPONSE_CHUNKS)], 1).astype(np.float32))
    return float(np.abs(imagined[0] - imagined[1]).mean())


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_variant(name: str, args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    cfg = merge(BASE, VARIANTS[name])
    t0 = time.perf_counter()
    v0 = Path(train_world_model({**cfg, "out": str(out / "v0")}, [args.sans]))
    t_v0 = time.perf_counter() - t0
    refine = merge(cfg, {"train": REFINE})
    t0 = time.perf_counter()
    v1 = Path(train_world_model({**refine, "out": str(out / "refined")}, [args.sans, args.refine], init_from=v0))
    t_refine = time.perf_counter() - t0
    row = {"variant": name, "change": VARIANTS[name], "train_s": round(t_v0, 1), "refine_s": round(t_refine, 1)}
    for stage, ckpt in (("v0", v0), ("refined", v1)):
        res = evaluate_world_model(ckpt, args.heldout, classifier=args.classifier, seed=0, **EVAL)
        al = res["alignment"]
        row[stage] = {
            "reward_S": al["reward"]["per_class"]["success"]["alignment"],
            "reward_F": al["reward"]["per_class"]["failure"]["alignment"],
            "reward_bal": al["reward"]["balanced_accuracy"], "reward_auc": res["reward_auc"],
            "visual_bal": al["visual"]["balanced_accuracy"], "psnr": res["psnr"], "counts": res["counts"],
            "action_response": action_response(ckpt, args.heldout),
        }
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sans", required=True)
    p.add_argument("--refine", required=True, help="policy rollouts the world model is refined on (as a loop iteration)")
    p.add_argument("--heldout", required=True, help="policy rollouts on other seeds, never trained on")
    p.add_argument("--classifier", required=True, help="success classifier folder (trained on real SANS frames)")
    p.add_argument("--out", default="bench/results/wm_levers")
    p.add_argument("--variants", default="baseline", help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = Path(args.out) / "results.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["variant"] for line in results.read_text().splitlines()} if results.exists() else set()
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        if name in done:
            continue
        row = run_variant(name, args)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in results.read_text().splitlines()]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    table = []
    for r in rows:
        for stage in ("v0", "refined"):
            s = r[stage]
            table.append((r["variant"], stage, pct(s["reward_S"]), pct(s["reward_F"]), pct(s["reward_bal"]),
                          "-" if s["reward_auc"] is None else f"{s['reward_auc']:.2f}", pct(s["visual_bal"]), f"{s['psnr']:.1f}",
                          "-" if s.get("action_response") is None else f"{s['action_response']:.1f}",
                          f"{r['train_s']:.0f}+{r['refine_s']:.0f}"))
    print_table(f"world-model levers, judged on {rows[0]['refined']['counts']} held-out policy rollouts",
                ["variant", "stage", "reward S", "reward F", "reward bal.", "reward AUC", "visual bal.", "PSNR", "xy response", "train s"], table)
    print(" ".join(f"{r['variant']}_refined_bal={r['refined']['reward_bal']:.3f} {r['variant']}_refined_auc={r['refined']['reward_auc'] or 0:.3f}" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
