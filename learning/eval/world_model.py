"""World-model evaluation (``wvl eval-wm``; Python: `evaluate_world_model`).

Held-out episodes are replayed in the world model with their REAL actions, from their real first frame,
chunk by chunk (autoregressive, exactly as `WorldModelEnv` runs in GRPO). For each episode of T frames the
world model generates frames 1..T-1 (the last chunk is padded past the episode by holding still, as training
windows are), and we compare with reality:

- reward alignment: the reward head's decision (any frame's success probability > ``reward_threshold``, the
  env's done rule) equals the real outcome (success vs not);
- visual alignment: the decision of an independent success classifier trained on real frames only (any generated
  frame with probability > the same threshold, 0.9) equals the real outcome. The classifier's own accuracy on the
  real held-out episodes is reported beside it (with 0.5 instead of 0.9 it mistook near-successes, where the cube
  sits a few cm from the goal, for successes: 85% vs 95% on real held-out PickCube episodes, measured);
- reward AUC: whatever the threshold, how often a real success gets a higher imagined reward (max over its frames)
  than a real non-success (0.5 = chance; GRPO compares rewards within a group, so the ranking matters);
- PSNR / SSIM of generated frames 1..T-1 against the real ones (mean over frames, then over episodes);
- state error (a model with a state head): the robot state it imagines at frames 1..T-1, started from the real
  state at frame 0, against the recorded one: TCP position error in mm and gripper-opening error, over all frames
  and per chunk of the horizon, beside the same errors of dead reckoning from the same actions
  (`learning.rl.imagined_state.DeadReckoning`, what imagination uses without a state head; its gain fitted on the
  evaluated episodes unless one is given, so the baseline is optimistic);

overall and per real outcome (success / near_success / failure), with episode counts, plus side-by-side
``real | generated`` MP4s. Both alignments are also given per real class with their balanced accuracy
(``alignment``, from `learning.eval.alignment.alignment_by_class`: a class with no episode is null with n = 0,
and a set with no real success says that its alignment only measures false positives). A model without a reward
head (ablation) has ``reward_alignment = null``: its outcome is judged from its frames only (visual alignment).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from learning.data.store import EpisodeStore
from learning.data.video import encode_video
from learning.data.windows import held_actions
from learning.eval.alignment import CLASS_SHORT, LABELLED, alignment_by_class, format_class_cell
from learning.eval.success_classifier import SuccessClassifier, train_success_classifier
from learning.eval.video_metrics import psnr, ssim
from learning.world_model.env import WorldModelEnv
from learning.world_model.model import WorldModel, load_world_model
from learning.world_model.train import as_store, store_cameras

log = logging.getLogger(__name__)


def replay_actions(actions: np.ndarray, n_chunks: int, K: int) -> np.ndarray:
    """(T, 7) episode actions -> (n_chunks, K, 7) chunks; past the last recorded step, hold still (zero motion,
    last gripper command), as `WindowDataset` pads its windows."""
    return held_actions(actions, np.arange(n_chunks * K)).reshape(n_chunks, K, -1)


def reward_auc(rows: Sequence[dict[str, Any]]) -> float | None:
    """Threshold-free: P(the imagined max reward of a real success > that of a real non-success), ties half (the
    area under the ROC curve); None without a reward head or without both kinds of episode."""
    pos = np.array([r["reward_max"] for r in rows if r["real_success"] and r["reward_max"] is not None])
    neg = np.array([r["reward_max"] for r in rows if not r["real_success"] and r["reward_max"] is not None])
    if not len(pos) or not len(neg):
        return None
    return pairwise_auc(pos, neg)


def pairwise_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a score of ``pos`` > a score of ``neg``) over all pairs, ties half: the area under the ROC curve."""
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


POSITION_FEATURES = ("ee_x", "ee_y", "ee_z")


def state_errors(pred: np.ndarray, real: np.ndarray, features: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-frame errors of imagined robot states (T, S) against real ones (T, S): ``position_mm`` (the Euclidean
    distance over the TCP position features present, in mm) and ``gripper`` (|opening error|), each (T,) or absent."""
    out = {}
    pos = [j for j, f in enumerate(features) if f in POSITION_FEATURES]
    if pos:
        out["position_mm"] = 1000.0 * np.linalg.norm(pred[:, pos] - real[:, pos], axis=1)
    if "gripper" in features:
        j = list(features).index("gripper")
        out["gripper"] = np.abs(pred[:, j] - real[:, j])
    return out


def _state_summary(per_episode: list[dict[str, np.ndarray]], K: int) -> dict[str, Any]:
    """Mean over every frame of every episode, and per chunk of the horizon (frames (c*K, (c+1)*K] of each episode
    that has them), of each error kind."""
    out: dict[str, Any] = {}
    for key in sorted({k for e in per_episode for k in e}):
        errs = [e[key] for e in per_episode if key in e]
        n_chunks = max(math.ceil(len(x) / K) for x in errs)
        out[key] = float(np.mean(np.concatenate(errs)))
        out[f"{key}_per_chunk"] = [float(np.mean(np.concatenate([x[c * K:(c + 1) * K] for x in errs if len(x) > c * K])))
                                   for c in range(n_chunks)]
    return out


def _quality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Frame quality and the classifier's accuracy on the real frames (alignment: `alignment_by_class`)."""
    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {"episodes": len(rows), "psnr": mean("psnr"), "ssim": mean("ssim"), "classifier_real_accuracy": mean("classifier_real_correct")}


def evaluate_world_model(model_or_ckpt: WorldModel | str | Path, store: EpisodeStore | str | Path,
                         episode_indices: Sequence[int] | None = None, classifier: SuccessClassifier | str | Path | None = None,
                         classifier_stores: Sequence[EpisodeStore | str | Path] | None = None, num_inference_steps: int = 2,
                         reward_threshold: float = 0.9, seed: int = 0, batch_size: int = 32, video_dir: str | Path | None = None,
                         max_videos: int = 8, device: str = "cpu", reward_from: str = "last_step",
                         classifier_threshold: float | None = None, dead_reckoning_store: EpisodeStore | str | Path | None = None,
                         dead_reckoning_gain: float | None = None) -> dict[str, Any]:
    """Replay held-out episodes with their real actions and measure alignment and frame quality (module docstring).

    ``classifier``: a trained `SuccessClassifier` (or its folder); otherwise one is trained on the REAL frames of
    ``classifier_stores`` (required then). The dead reckoning the state head is compared with has its gain and closed
    opening fitted on ``dead_reckoning_store``'s episodes (default: the evaluated episodes themselves, an optimistic
    baseline), its gain replaced by ``dead_reckoning_gain`` when given. Returns the dict that ``wvl eval-wm`` writes to
    wm_eval.json.
    """
    t_start = time.perf_counter()
    model = load_world_model(model_or_ckpt) if isinstance(model_or_ckpt, (str, Path)) else model_or_ckpt
    model = model.to(device).eval()
    store = as_store(store)
    indices = list(range(len(store))) if episode_indices is None else [int(i) for i in episode_indices]
    if not indices:
        raise ValueError(f"episode_indices: no episodes selected from {store.root}")
    if isinstance(classifier, (str, Path)):
        classifier = SuccessClassifier.from_pretrained(classifier).eval()
    if classifier is None:
        if not classifier_stores:
            raise ValueError("classifier_stores: give the store(s) whose REAL frames train the success classifier (or a trained classifier)")
        classifier = train_success_classifier(classifier_stores)
    env = WorldModelEnv(model, num_inference_steps=num_inference_steps, reward_threshold=reward_threshold, horizon=10**9,
                        device=device, seed=seed, reward_fn=None if model.reward_net is not None else classifier.reward_fn(),
                        reward_from=reward_from)
    K = model.wm_config.chunk
    clf_th = reward_threshold if classifier_threshold is None else classifier_threshold
    video_dir = Path(video_dir) if video_dir is not None else None
    rows: list[dict[str, Any]] = []
    features = model.wm_config.state_features if model.state_net is not None else ()
    if features:
        from learning.rl.imagined_state import DeadReckoning

        if dead_reckoning_store is None:
            reckoner = DeadReckoning.fitted(features, store, indices)  # in-sample: an optimistic baseline for the head
        else:
            ref = as_store(dead_reckoning_store)
            reckoner = DeadReckoning.fitted(features, ref, range(len(ref)))
        if dead_reckoning_gain is not None:
            reckoner.scale = float(dead_reckoning_gain)
    head_errors: list[dict[str, np.ndarray]] = []
    reckoned_errors: list[dict[str, np.ndarray]] = []
    from robot.console import progress

    with progress() as bar:
        job = bar.add_task("replay held-out episodes", total=len(indices), status="")
        for b0 in range(0, len(indices), batch_size):
            ids = indices[b0:b0 + batch_size]
            real = [store.frames(i) for i in ids]
            acts = [np.asarray(store.step_table(i, ["action"]).column("action").to_pylist(), np.float32) for i in ids]
            rows_meta = [store.row(i) for i in ids]
            n_chunks = max(math.ceil((len(f) - 1) / K) for f in real)
            chunks = np.stack([replay_actions(a, n_chunks, K) for a in acts])  # (B, n_chunks, K, 7)
            real_states = [store.states(i, features) for i in ids] if features else None
            env.reset(np.stack([f[0] for f in real]), [r["tasks"][0] for r in rows_meta], seed=[seed + i for i in ids],
                      states=np.stack([s[0] for s in real_states]) if features else None)
            gen, rew, imagined, reckoned = [], [], [], []
            st = np.stack([s[0] for s in real_states]) if features else None
            for c in range(n_chunks):
                frames, rewards, _ = env.step(chunks[:, c])
                gen.append(frames)
                rew.append(rewards)
                if features:
                    imagined.append(env.states)
                    for k in range(K):  # per action, so every frame has its dead-reckoned state
                        st = reckoner.step(st, chunks[:, c, k:k + 1])
                        reckoned.append(st[:, None])
            gen_all = np.concatenate(gen, 1)  # (B, n_chunks*K, H, W, 3): frames 1 .. n_chunks*K
            rew_all = np.concatenate(rew, 1)
            if features:
                imagined_all, reckoned_all = np.concatenate(imagined, 1), np.concatenate(reckoned, 1)  # (B, n_chunks*K, S)
            for j, (ei, frames_real, meta) in enumerate(zip(ids, real, rows_meta)):
                T = len(frames_real)
                g, r = gen_all[j, :T - 1], rew_all[j, :T - 1]
                if features:
                    head_errors.append(state_errors(imagined_all[j, :T - 1], real_states[j][1:], features))
                    reckoned_errors.append(state_errors(reckoned_all[j, :T - 1], real_states[j][1:], features))
                real_success = meta["outcome"] == "success"
                p_gen = classifier.predict(g)
                p_real = classifier.predict(frames_real[1:])
                row = {
                    "episode": ei, "outcome": meta["outcome"], "length": T, "real_success": real_success,
                    "reward_max": float(r.max()) if model.reward_net is not None else None,
                    "reward_success": bool((r > reward_threshold).any()) if model.reward_net is not None else None,
                    # per generated frame over the whole replay (past the episode's end the arm holds still), so
                    # other decision rules (the episode's last frame, a fixed horizon) can be read afterwards
                    "reward_frames": [round(float(x), 4) for x in rew_all[j]] if model.reward_net is not None else None,
                    "visual_success": bool((p_gen > clf_th).any()), "visual_max": float(p_gen.max()),
                    "psnr": float(psnr(g, frames_real[1:]).mean()), "ssim": float(ssim(g, frames_real[1:]).mean()),
                    "classifier_real_correct": float(bool((p_real > clf_th).any()) == real_success),
                }
                row["reward_aligned"] = None if row["reward_success"] is None else float(row["reward_success"] == real_success)
                row["visual_aligned"] = float(row["visual_success"] == real_success)
                rows.append(row)
                if video_dir is not None and len(rows) <= max_videos:
                    video_dir.mkdir(parents=True, exist_ok=True)
                    side = np.concatenate([frames_real[1:], g], 2)  # (T-1, H, 2W, 3): real | generated
                    encode_video(side, video_dir / f"episode{ei:04d}_{meta['outcome']}.mp4", fps=float(meta.get("fps") or 10.0))
            bar.update(job, advance=len(ids), status=f"reward alignment {np.mean([r['reward_aligned'] or 0 for r in rows]):.2f}")
    al = alignment_by_class(rows)
    if al["note"]:
        log.warning("world-model evaluation: %s", al["note"])
    present = sorted({r["outcome"] for r in rows})
    result: dict[str, Any] = {
        **_quality(rows),
        "reward_alignment": al["reward"]["overall"], "visual_alignment": al["visual"]["overall"],
        "reward_balanced_accuracy": al["reward"]["balanced_accuracy"], "visual_balanced_accuracy": al["visual"]["balanced_accuracy"],
        "reward_auc": reward_auc(rows), "alignment": al,
        "state_error": {"features": list(features), "state_head": _state_summary(head_errors, K),
                        "dead_reckoning_gain_m_per_unit": reckoner.scale, "dead_reckoning_closed_opening": reckoner.closed_opening,
                        "dead_reckoning": _state_summary(reckoned_errors, K)} if features else None,
        "per_outcome": {o: {**_quality([r for r in rows if r["outcome"] == o]),
                            "reward_alignment": al["reward"]["per_class"][o]["alignment"],
                            "visual_alignment": al["visual"]["per_class"][o]["alignment"]} for o in present},
        "counts": {o: sum(r["outcome"] == o for r in rows) for o in sorted({r["outcome"] for r in rows})},
        "store": str(store.root), "num_inference_steps": num_inference_steps, "reward_from": reward_from, "reward_threshold": reward_threshold,
        "classifier_threshold": clf_th,
        "seed": seed, "reward_head": model.reward_net is not None, "wall_s": round(time.perf_counter() - t_start, 1),
        "episodes_detail": rows,
    }
    return result


def main(cfg: DictConfig, mode: str | None = None) -> int:
    """``wvl eval-wm``: evaluate a checkpoint on held-out episodes; writes <out>/wm_eval.json (+ videos/, classifier/)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    if c.get("threads"):
        torch.set_num_threads(int(c["threads"]))
    out = Path(c["out"] or Path(c["checkpoint"]) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    classifier = c.get("classifier")
    if classifier is None:
        if not c.get("classifier_stores"):
            raise ValueError("classifier_stores: give the store(s) whose REAL frames train the success classifier, or classifier=<folder>")
        classifier = train_success_classifier(list(c["classifier_stores"]), steps=int(c["classifier_steps"]), seed=int(c["seed"]))
        classifier.save_pretrained(out / "classifier")
    result = evaluate_world_model(
        c["checkpoint"], c["store"], c.get("episodes"), classifier=classifier, num_inference_steps=int(c["num_inference_steps"]),
        reward_threshold=float(c["reward_threshold"]), seed=int(c["seed"]), batch_size=int(c["batch_size"]), reward_from=c["reward_from"],
        video_dir=out / "videos", max_videos=int(c["videos"]), dead_reckoning_store=c.get("dead_reckoning_store"),
        dead_reckoning_gain=c.get("dead_reckoning_gain"),
    )
    result["checkpoint"] = str(c["checkpoint"])
    train_cfg = Path(c["checkpoint"]) / "train_config.json"
    if train_cfg.exists():
        result["train"] = json.loads(train_cfg.read_text())
        trained = result["train"].get("cameras") or []
        held = store_cameras(EpisodeStore(c["store"], create=False), c.get("episodes"))
        result["camera_mismatch"] = bool(trained and held and any(cam not in trained for cam in held))
        if result["camera_mismatch"]:
            log.warning("held-out episodes were filmed with another camera framing (%s) than the training episodes (%s): "
                        "the world model has never seen this view; recollect one of the stores", held, trained)
    (out / "wm_eval.json").write_text(json.dumps(result, indent=2))
    from robot.console import print_table

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    print_table(f"world model {c['checkpoint']} on {c['store']} -> {out / 'wm_eval.json'}",
                ["outcome", "episodes", "reward alignment", "visual alignment", "PSNR dB", "SSIM"], wm_eval_table_rows(result))
    print(f"classifier accuracy on the real held-out episodes: {f(result['classifier_real_accuracy'])}")
    print(f"reward AUC (a real success imagined above a real non-success; 0.5 = chance): {f(result['reward_auc'])}")
    if result["state_error"]:
        for name, e in (("state head", result["state_error"]["state_head"]), ("dead reckoning", result["state_error"]["dead_reckoning"])):
            print(f"{name}: TCP position error {f(e.get('position_mm'))} mm (per chunk "
                  f"{[round(x, 1) for x in e.get('position_mm_per_chunk', [])]}), gripper-opening error {f(e.get('gripper'))}")
    if result["alignment"]["note"]:
        print(f"note: {result['alignment']['note']}")
    return 0


def wm_eval_table_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """The console table of ``wvl eval-wm``: all episodes, each real class (n/a where it has no episode), the
    balanced accuracy (mean over the classes present)."""
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    al = result["alignment"]
    rows = [("all", str(result["episodes"]), pct(al["reward"]["overall"]), pct(al["visual"]["overall"]), f(result["psnr"]), f(result["ssim"]))]
    for o in al["reward"]["per_class"]:
        q = result["per_outcome"].get(o, {})
        rows.append((o, str(al["counts"][o]), format_class_cell(al["reward"]["per_class"][o]), format_class_cell(al["visual"]["per_class"][o]),
                     f(q.get("psnr")), f(q.get("ssim"))))
    present = "/".join(CLASS_SHORT[o] for o in LABELLED if al["counts"][o]) or "none"
    rows.append((f"balanced accuracy ({present})", "", pct(al["reward"]["balanced_accuracy"]), pct(al["visual"]["balanced_accuracy"]), "", ""))
    return rows
