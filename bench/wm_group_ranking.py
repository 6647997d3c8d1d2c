"""Does the imagined reward order a GRPO group the way the simulator does? The signal GRPO actually uses.

GRPO compares the G trajectories sampled from one start: an advantage is a trajectory's reward minus its group's mean.
So what a world model's reward must get right is the order *within* a group (same scene, different sampled actions),
not across scenes, which is what `wvl eval-wm`'s AUC pools. This measures it in two steps:

    # 1. the policy plays G sampled episodes (GRPO's temperature, as the oracle samples) from each of S scenes; the
    #    simulator labels each; the store keeps every episode with its scene seed
    .venv/bin/python bench/wm_group_ranking.py collect --policy <policy folder> --scenes <store whose seeds to use> \
        --groups 32 --group-size 8 --temperature 0.5 --out <grouped store>
    # 2. the world model replays each episode's real actions from its first frame (wvl eval-wm), then per group
    wvl eval-wm checkpoint=<wm> store=<grouped store> classifier=<classifier> out=<eval dir> videos=0
    .venv/bin/python bench/wm_group_ranking.py score --store <grouped store> --eval <eval dir>/wm_eval.json
    # several stores judged by one world model pool into one measure: --store <a> <b> --eval <a eval> <b eval>
    # 3. a decision threshold per score chosen on tuning evaluations (best balanced accuracy), then applied as it is
    #    to test evaluations of the same world model on other seeds
    .venv/bin/python bench/wm_group_ranking.py calibrate --tune <eval.json ...> --test <eval.json ...>
    # 4. two world models judged on the same episodes: the issue's alignment of each, paired (exact McNemar)
    .venv/bin/python bench/wm_group_ranking.py paired --a <eval.json ...> --b <eval.json ...>

Scores, over the groups with both a real success and a real failure (only they carry a GRPO gradient):
- ``group_auc``: P(a real success's imagined score > a real failure's of the same group), ties half; 0.5 = chance;
- ``sign_agreement``: the share of trajectories whose advantage sign under the imagined score equals the sign under
  the simulator's (0 advantages, a group the imagined reward calls all-equal, count as wrong);
and pooled over all episodes (any store `wvl eval-wm` ran on, grouped or not): AUC and per-class accuracy at 0.5.
Imagined scores: ``any_frame`` the loop's rule (a frame's reward > 0.9, the 0/1 reward GRPO got by default), ``max``
the highest success probability over the episode's frames, ``max_horizon`` the same over the whole imagined horizon
(``--horizon`` frames; a finished episode's arm holds still until then: what ``grpo.reward=probability`` reads when
nothing stops the rollout early), ``last`` the probability at the episode's last frame (where the simulator judged;
it knows when the real episode ended, which imagination does not), ``horizon_end`` at the horizon's last frame.

Last line: episodes=... <score>_auc=... [groups=... informative=... <score>_group_auc=... <score>_sign=...]
(calibrate: <score>_threshold=... <score>_test_balanced=... <score>_test_success=... <score>_test_other=...;
paired: a_aligned=... b_aligned=... a_only=... b_only=... mcnemar_p=...)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.console import print_table  # noqa: E402


def collect(args: argparse.Namespace) -> None:
    import torch

    from learning.data.store import EpisodeStore
    from learning.policy import load_policy
    from learning.rl.grpo import GRPOConfig
    from learning.rl.oracle import connected_sim_robot, episode_seeds, sampled_episode

    torch.set_num_threads(1)
    scenes = EpisodeStore(args.scenes, create=False)
    seeds = episode_seeds(scenes, range(len(scenes)))[args.first_scene:args.first_scene + args.groups]
    if len(seeds) < args.groups:
        raise ValueError(f"--scenes: {scenes.root} has {len(scenes)} episodes, fewer than --first-scene {args.first_scene} + --groups {args.groups}")
    policy = load_policy(args.policy, device="cpu")
    cfg = GRPOConfig.from_dict({"temperature": args.temperature, "horizon_chunks": args.horizon_chunks})
    robot = connected_sim_robot({"kind": "maniskill"}, args.task)
    out = EpisodeStore(args.out)
    t0 = time.perf_counter()
    try:
        for g, seed in enumerate(seeds):
            wins = 0
            for k in range(args.group_size):
                _, res = sampled_episode(robot, policy, seed, args.sample_seed + g * args.group_size + k, cfg,
                                         policy.default_instruction, info={"group": g, "temperature": args.temperature})
                res.episode.outcome = "success" if res.success else "failure"
                out.append(res.episode)
                wins += bool(res.success)
            print(f"group {g} (seed {seed}): {wins}/{args.group_size} successes  [{time.perf_counter() - t0:.0f} s]", flush=True)
    finally:
        robot.close()


SCORES = ("any_frame", "max", "max_horizon", "last", "horizon_end")


def _scores(row: dict, threshold: float, horizon: int) -> dict[str, float]:
    full = np.asarray(row["reward_frames"], np.float64)  # the whole replay; the arm holds still past the episode's end
    r = full[:row["length"] - 1]  # the episode's own frames
    if len(full) < horizon:
        raise ValueError(f"episode {row['episode']}: {len(full)} imagined frames, fewer than the horizon {horizon}")
    return {"any_frame": float((r > threshold).any()), "max": float(r.max()), "max_horizon": float(full[:horizon].max()),
            "last": float(r[-1]), "horizon_end": float(full[horizon - 1])}


def score(args: argparse.Namespace) -> None:
    from learning.data.store import EpisodeStore
    from learning.eval.world_model import pairwise_auc

    if len(args.store) != len(args.eval):
        raise ValueError(f"--store and --eval pair up: {len(args.store)} stores, {len(args.eval)} evals")
    # (store, row) per episode: several evaluations of one world model on disjoint stores pool into one measure
    rows: dict[tuple[int, int], dict] = {}
    stores, thresholds = [], set()
    for k, (store_path, eval_path) in enumerate(zip(args.store, args.eval)):
        stores.append(EpisodeStore(store_path, create=False))
        ev = json.loads(Path(eval_path).read_text())
        thresholds.add(ev["reward_threshold"])
        if any(r.get("reward_frames") is None for r in ev["episodes_detail"]):
            raise ValueError(f"--eval: {eval_path} has no per-frame rewards (a world model without a reward head, or an older eval-wm)")
        rows.update({(k, r["episode"]): r for r in ev["episodes_detail"]})
    if len(thresholds) != 1:
        raise ValueError(f"--eval: the evaluations used different reward thresholds {sorted(thresholds)}")
    threshold = thresholds.pop()
    real_all = np.array([bool(r["real_success"]) for r in rows.values()])
    sc_all = [_scores(r, threshold, args.horizon) for r in rows.values()]
    # across all episodes (scenes mixed, as `wvl eval-wm` pools them): AUC, and accuracy per class at 0.5
    pooled = []
    for n in SCORES:
        x = np.array([sc[n] for sc in sc_all])
        th = threshold if n == "any_frame" else 0.5
        pooled.append((n, f"{pairwise_auc(x[real_all], x[~real_all]):.3f}" if real_all.any() and not real_all.all() else "n/a",
                       f"{np.mean((x > th)[real_all]):.2f}" if real_all.any() else "n/a",
                       f"{np.mean((x <= th)[~real_all]):.2f}" if (~real_all).any() else "n/a"))
    print_table(f"{', '.join(args.eval)}: {len(rows)} episodes, {int(real_all.sum())} real successes, pooled",
                ["imagined score", "AUC", "successes > 0.5", "others <= 0.5"], pooled)
    out = [f"episodes={len(rows)}"] + [f"{n}_auc={a}" for n, a, _, _ in pooled]
    groups: dict[tuple[int, int], list[tuple[bool, dict[str, float]]]] = {}
    for ((k, i), r), sc in zip(rows.items(), sc_all):
        g = json.loads(stores[k].row(i)["info_json"]).get("group")
        if g is not None:
            groups.setdefault((k, int(g)), []).append((bool(r["real_success"]), sc))
    if groups:
        auc = {n: [] for n in SCORES}
        sign = {n: [] for n in SCORES}
        informative = 0
        for members in groups.values():
            real = np.array([s for s, _ in members], np.float64)
            if real.min() == real.max():
                continue
            informative += 1
            adv_real = real - real.mean()
            for n in SCORES:
                imag = np.array([sc[n] for _, sc in members])
                auc[n].append(pairwise_auc(imag[real == 1], imag[real == 0]))
                sign[n].append(float((np.sign(imag - imag.mean()) == np.sign(adv_real)).mean()))
        table = [(n, f"{np.mean(auc[n]):.3f}" if auc[n] else "n/a", f"{np.mean(sign[n]):.3f}" if sign[n] else "n/a") for n in SCORES]
        print_table(f"within groups: {len(groups)} groups, {informative} with both outcomes",
                    ["imagined score", "group AUC", "advantage sign agrees"], table)
        out += [f"groups={len(groups)}", f"informative={informative}"]
        out += [f"{n}_group_auc={np.mean(auc[n]):.3f} {n}_sign={np.mean(sign[n]):.3f}" for n in SCORES if auc[n]]
    print(" ".join(out))


def _eval_rows(paths: list[str], horizon: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows, thresholds = [], set()
    for path in paths:
        ev = json.loads(Path(path).read_text())
        thresholds.add(ev["reward_threshold"])
        rows += ev["episodes_detail"]
    if len(thresholds) != 1:
        raise ValueError(f"{paths}: the evaluations used different reward thresholds {sorted(thresholds)}")
    threshold = thresholds.pop()
    real = np.array([bool(r["real_success"]) for r in rows])
    sc = [_scores(r, threshold, horizon) for r in rows]
    return real, {n: np.array([x[n] for x in sc]) for n in SCORES}


def calibrate(args: argparse.Namespace) -> None:
    """Per score: the threshold with the best balanced accuracy on --tune (a grid of 0.01), then the accuracy per class
    it gives on --test, untouched by the choice."""
    tune_real, tune = _eval_rows(args.tune, args.horizon)
    test_real, test = _eval_rows(args.test, args.horizon)
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)

    def accuracy(x: np.ndarray, real: np.ndarray, th: float) -> tuple[float, float]:
        return float(np.mean((x > th)[real])), float(np.mean((x <= th)[~real]))

    table, out = [], []
    for n in SCORES:
        if n == "any_frame":
            continue  # already 0/1: its threshold is the evaluation's
        best = max(grid, key=lambda th: sum(accuracy(tune[n], tune_real, th)))
        ts, to = accuracy(tune[n], tune_real, best)
        s_, o_ = accuracy(test[n], test_real, best)
        table.append((n, f"{best:.2f}", f"{(ts + to) / 2:.3f} ({ts:.2f} / {to:.2f})", f"{(s_ + o_) / 2:.3f} ({s_:.2f} / {o_:.2f})",
                      f"{np.mean((test[n] > best) == test_real):.3f}"))
        out += [f"{n}_threshold={best:.2f} {n}_test_balanced={(s_ + o_) / 2:.3f} {n}_test_success={s_:.3f} {n}_test_other={o_:.3f}"]
    print_table(f"thresholds chosen on {len(tune_real)} tuning episodes ({int(tune_real.sum())} successes), applied to "
                f"{len(test_real)} test episodes ({int(test_real.sum())} successes)",
                ["imagined score", "threshold", "tune balanced (S / other)", "test balanced (S / other)", "test overall"], table)
    print(" ".join(out))


def paired(args: argparse.Namespace) -> None:
    """The issue's alignment (a real success imagined as one, a real failure not) of two world models on the same
    episodes, episode by episode: the discordant pairs and the exact McNemar p-value."""
    from math import comb

    def aligned(paths: list[str]) -> tuple[list[tuple[int, int, bool]], np.ndarray]:
        keys, flags = [], []
        for k, path in enumerate(paths):
            for r in json.loads(Path(path).read_text())["episodes_detail"]:
                keys.append((k, r["episode"], bool(r["real_success"])))
                flags.append(bool(r["reward_aligned"]))
        return keys, np.array(flags)

    ka, a = aligned(args.a)
    kb, b = aligned(args.b)
    if ka != kb:
        raise ValueError("--a and --b must be evaluations of the same episodes, in the same order")
    real = np.array([s for _, _, s in ka])
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    p = min(1.0, 2 * sum(comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2 ** n) if n else 1.0
    rows = [(name, f"{x.mean():.3f} ({int(x.sum())}/{len(x)})", f"{x[real].mean():.3f}" if real.any() else "n/a",
             f"{x[~real].mean():.3f}" if (~real).any() else "n/a") for name, x in (("a", a), ("b", b))]
    print_table(f"{len(a)} episodes ({int(real.sum())} real successes): a right only {a_only}, b right only {b_only}, "
                f"exact McNemar p {p:.3g}", ["world model", "aligned", "on successes", "on the others"], rows)
    print(f"a_aligned={a.mean():.4f} b_aligned={b.mean():.4f} a_only={a_only} b_only={b_only} mcnemar_p={p:.4g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="G sampled episodes per scene, labelled by the simulator")
    c.add_argument("--policy", required=True)
    c.add_argument("--scenes", required=True, help="a store whose episodes' seeds are the scenes (e.g. policy rollouts on the tuning seeds)")
    c.add_argument("--groups", type=int, default=32)
    c.add_argument("--first-scene", type=int, default=0, help="the first episode of --scenes to use")
    c.add_argument("--group-size", type=int, default=8)
    c.add_argument("--temperature", type=float, default=0.5)
    c.add_argument("--horizon-chunks", type=int, default=5)
    c.add_argument("--task", default="PickCube-v1")
    c.add_argument("--sample-seed", type=int, default=0)
    c.add_argument("--out", required=True)
    s = sub.add_parser("score", help="within-group ranking of a `wvl eval-wm` run on the grouped store")
    s.add_argument("--store", required=True, nargs="+", help="one or more stores (pooled)")
    s.add_argument("--eval", required=True, nargs="+", help="the wm_eval.json of `wvl eval-wm` on each --store, in the same order")
    s.add_argument("--horizon", type=int, default=40, help="frames of an imagined GRPO rollout (horizon_chunks x K)")
    k = sub.add_parser("calibrate", help="decision thresholds chosen on tuning evaluations, applied to test evaluations")
    k.add_argument("--tune", required=True, nargs="+", help="wm_eval.json files of the tuning episodes")
    k.add_argument("--test", required=True, nargs="+", help="wm_eval.json files of the test episodes (other seeds)")
    k.add_argument("--horizon", type=int, default=40, help="frames of an imagined GRPO rollout (horizon_chunks x K)")
    q = sub.add_parser("paired", help="two world models' alignment on the same episodes, paired")
    q.add_argument("--a", required=True, nargs="+", help="wm_eval.json files of world model a")
    q.add_argument("--b", required=True, nargs="+", help="wm_eval.json files of world model b, the same stores in the same order")
    args = p.parse_args()
    {"collect": collect, "score": score, "calibrate": calibrate, "paired": paired}[args.cmd](args)


if __name__ == "__main__":
    main()
