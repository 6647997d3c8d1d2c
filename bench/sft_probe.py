"""Why behaviour cloning fails on PickCube: two measurements behind bench/results/sft_recipes.md.

    # failure anatomy of a trained policy on the tuning seeds (privileged simulator state, per step)
    .venv/bin/python bench/sft_probe.py anatomy --policy <sft out>/policy --seed 3000000 --episodes 20 [--execute-steps 8]
    # can the input-level keypoint localiser find the cube? (trains only it, on a SANS store's success demos)
    .venv/bin/python bench/sft_probe.py localiser --store /tmp/exp/d200 [--steps 500] [--all-frames]
    # does a trained policy use what its aux head knows? (held-out episodes of a store, no simulator)
    .venv/bin/python bench/sft_probe.py offline --policy <sft out>/policy --store /tmp/exp/d300 [--episodes 60]

anatomy: each episode runs through the same path as `wvl eval-policy` (ONNX runtime, episode runner, safety
filter); every command sent to the simulated arm is logged with the TCP, cube and goal positions. Reported: where
the gripper first closed (xy / z error to the cube), whether the cube was lifted, success. Last line:
``success=… closed=… close_xy_err_cm=… close_z_err_mm=… lifted=…``.

localiser: the compact VLA's keypoint_level=0 front end (3x3 colour filter with CoordConv channels, spatial
softmax, 2-layer MLP) regresses where the gripper closes on the cube, from the frame. By default only frames
before the grasp, where the target is the grasp point; ``--all-frames`` adds the later frames with SFT's target,
the object's position now (the gripper's, with the cube in the hand). Last line: ``train_xy_err_cm=… val_xy_err_cm=… steps=… seconds=…``.

offline: on episodes of ``--store`` the policy never trained or validated on (its sft_summary.json says which it
did), in the windows before the gripper first closes: how the greedy first action's x / y follow the demonstrated
ones (correlation, least-squares slope: 1 = right size, < 1 = shrunk toward zero), the aux head's object-position
error per axis, and a *controller probe*: a 2-layer MLP with a 256-way head, trained (1500 steps) on the policy's
own aux estimate of (object - gripper) plus the robot state of the policy's training windows, scored the same way.
If the probe follows the demonstrations much better than the policy, the policy's perception knows where the cube
is and its action head does not use it. Last line: ``policy_corr_x=… policy_slope_x=… … probe_corr_x=… …``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.console import print_table  # noqa: E402


def anatomy(policy_dir: str, seed: int, n: int, execute_steps: int | None) -> None:
    from learning.eval import policy_eval as pe
    from learning.policy import load_policy
    from learning.policy.export import export_policy
    from robot.sim.maniskill import ManiSkillConfig
    from robot.sim.rollout import sim_safety_config

    sim_cfg = ManiSkillConfig.from_dict({"task": "PickCube-v1"})
    art = f"{tempfile.mkdtemp()}/artifact"
    export_policy(load_policy(policy_dir), art, version="probe", control_hz=sim_cfg.control_hz)
    sim_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sim_cfg).items()} | {"kind": "maniskill"}
    pe._worker_init(sim_dict, art, pe.rig_for(sim_cfg), 1, logging.WARNING, sim_safety_config(sim_cfg.safety_overrides()).to_dict())
    robot = pe._W["robot"]
    sim, send = robot.sim, robot.arm.send_action
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def logged_send(action):
        p = sim.privileged()
        steps.append((np.asarray(action).copy(), p["tcp"].copy(), p["cube"].copy(), p["goal"].copy()))
        return send(action)

    robot.arm.send_action = logged_send
    rows = []
    for i in range(n):
        steps.clear()
        r = pe.rollout(robot, pe._W["runtime"], seed + i, pe.RolloutConfig(execute_steps=execute_steps), i, stride=n, safety=pe._W["safety"])
        A, T, C = (np.array([s[k] for s in steps]) for k in range(3))
        closes = np.flatnonzero(A[:, 6] < 0)
        c0 = int(closes[0]) if closes.size else None
        rows.append(dict(seed=r.seed, success=bool(r.success), close_step=c0,
                         close_xy_cm=None if c0 is None else 100 * float(np.linalg.norm(T[c0, :2] - C[c0, :2])),
                         close_z_mm=None if c0 is None else 1000 * float(T[c0, 2] - C[c0, 2]),
                         lifted=bool(C[:, 2].max() > C[0, 2] + 0.02)))
    print_table(f"failure anatomy: {policy_dir}", ["seed", "success", "close step", "xy at close cm", "z at close mm", "lifted"],
                [(r["seed"], r["success"], r["close_step"], "-" if r["close_xy_cm"] is None else f"{r['close_xy_cm']:.1f}",
                  "-" if r["close_z_mm"] is None else f"{r['close_z_mm']:.1f}", r["lifted"]) for r in rows])
    med = lambda k: float(np.median([r[k] for r in rows if r[k] is not None] or [np.nan]))  # noqa: E731
    print(f"success={np.mean([r['success'] for r in rows]):.3f} closed={np.mean([r['close_step'] is not None for r in rows]):.3f} "
          f"close_xy_err_cm={med('close_xy_cm'):.2f} close_z_err_mm={med('close_z_mm'):.1f} lifted={np.mean([r['lifted'] for r in rows]):.3f}")


class Localiser(nn.Module):
    """CompactVLA's keypoint_level=0 front end plus a readout of the grasp point's xy."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, size: int, keypoints: int = 32) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None])
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], -1))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.kp_conv = nn.Conv2d(5, keypoints, 3, padding=1)
        nn.init.kaiming_normal_(self.kp_conv.weight, nonlinearity="relu")
        nn.init.zeros_(self.kp_conv.bias)
        self.head = nn.Sequential(nn.Linear(2 * keypoints, 128), nn.GELU(), nn.Linear(128, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 2) normalised xy
        x = torch.cat([(x - self.mean) / self.std, self.coords.expand(len(x), -1, -1, -1)], 1)
        attn = torch.softmax(self.kp_conv(x).flatten(2), -1)
        return self.head((attn @ self.grid).flatten(1))


def localiser(store_dir: str, steps: int, all_frames: bool) -> None:
    from learning.data.store import EpisodeStore
    from learning.policy.sft import load_demos

    torch.manual_seed(0)
    store = EpisodeStore(store_dir, create=False)
    idx = store.indices(outcomes=("success",))
    n_train = int(0.75 * len(idx))

    def frames(indices):
        d = load_demos(store, indices, 8, None, ())
        keep = np.ones(len(d.images), bool) if all_frames else d.aux[:, 3] > d.aux[:, 3].max() - 0.005  # gripper still open
        x = torch.as_tensor(d.images[keep]).permute(0, 3, 1, 2).float() / 255.0
        return x, torch.as_tensor(d.aux[keep][:, 4:6])  # the object's xy now (sft.aux_targets)

    xt, yt = frames(idx[:n_train])
    xv, yv = frames(idx[n_train:])
    ym, ys = yt.mean(0), yt.std(0)
    model = Localiser(xt.mean((0, 2, 3), keepdim=True), xt.std((0, 2, 3), keepdim=True), xt.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    rng, t0, rows = np.random.default_rng(0), time.time(), []

    @torch.no_grad()
    def err_cm(x, y):
        return float(100 * (model(x) * ys + ym - y).abs().mean())

    for i in range(steps + 1):
        if i % max(1, steps // 4) == 0 or i == steps:
            rows.append((i, f"{err_cm(xt[:500], yt[:500]):.2f}", f"{err_cm(xv, yv):.2f}", f"{time.time() - t0:.0f}"))
        if i == steps:
            break
        b = rng.integers(0, len(xt), 32)
        loss = ((model(xt[b]) - (yt[b] - ym) / ys) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print_table(f"keypoint localiser, {'all' if all_frames else 'pre-grasp'} frames: {len(xt)} train / {len(xv)} val "
                f"({n_train} / {len(idx) - n_train} episodes)", ["step", "train xy err cm", "val xy err cm", "s"], rows)
    print(f"train_xy_err_cm={rows[-1][1]} val_xy_err_cm={rows[-1][2]} steps={steps} seconds={rows[-1][3]}")


def offline(policy_dir: str, store_dir: str, n_episodes: int) -> None:
    import json

    from learning.data.store import EpisodeStore
    from learning.policy import load_policy
    from learning.policy.sft import load_demos

    torch.manual_seed(0)
    policy = load_policy(policy_dir).eval()
    store = EpisodeStore(store_dir, create=False)
    summary = json.loads((Path(policy_dir).parent / "sft_summary.json").read_text())
    seen = set(summary["train_episodes"]) | set(summary["val_episodes"]) if Path(summary["store"]) == store.root else set()
    held = [i for i in store.indices(outcomes=("success",)) if i not in seen][:n_episodes]
    feats = tuple(policy.config.state_features)
    train, test = load_demos(store, sorted(summary["train_episodes"]), 8, None, feats), load_demos(store, held, 8, None, feats)
    if not policy.config.aux_dim:
        raise SystemExit("offline: the policy has no aux head (aux_dim=0); the probe reads its object estimate")
    aux_mean, aux_std = train.aux.mean(0), train.aux.std(0) + 1e-3  # SFT's normalisation of the aux targets

    @torch.no_grad()
    def run(d):  # -> greedy chunks (N, K, D), aux estimates in metres (N, AUX_DIM)
        outs = [policy.logits_and_aux_from(d.images[s:s + 256], d.instructions[s:s + 256], d.states[s:s + 256] if feats else None)
                for s in range(0, len(d), 256)]
        greedy = policy.tokens_to_actions(torch.cat([o[0] for o in outs]).argmax(-1)).numpy()
        return greedy, torch.cat([o[1] for o in outs]).numpy() * aux_std + aux_mean

    greedy, aux = run(test)
    pre = test.aux[:, 3] > test.aux[:, 3].max() - 0.005  # gripper still open: before the grasp
    demo = test.chunks[pre, 0, :2]

    def fit(pred):  # per axis: correlation, slope of pred on demo
        return [(float(np.corrcoef(pred[:, k], demo[:, k])[0, 1]), float(np.polyfit(demo[:, k], pred[:, k], 1)[0])) for k in range(2)]

    pol = fit(greedy[pre, 0, :2])
    obj_err = 100 * np.abs(aux[:, 4:6] - test.aux[:, 4:6]).mean(0)

    def features(d, a):  # the policy's own estimate of (object - gripper) in the plane, and the robot state
        return np.c_[a[:, 4:6] - d.aux[:, 0:2], d.states].astype(np.float32)

    xt, xv = features(train, run(train)[1]), features(test, aux)
    m, sd = xt.mean(0), xt.std(0) + 1e-3
    xt, xv = torch.as_tensor((xt - m) / sd), torch.as_tensor((xv - m) / sd)
    yt = policy.actions_to_tokens(train.chunks)[:, :2]  # the first action's x, y tokens
    probe = nn.Sequential(nn.Linear(xt.shape[1], 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 2 * 256))
    opt = torch.optim.AdamW(probe.parameters(), 6e-4)
    rng = np.random.default_rng(0)
    for _ in range(1500):
        b = torch.as_tensor(rng.integers(0, len(xt), 32))
        loss = nn.functional.cross_entropy(probe(xt[b]).view(-1, 256), yt[b].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        centres = torch.as_tensor(policy.action_tokenizer.centres)
        prb = fit(centres[probe(xv).view(-1, 2, 256).argmax(-1)].numpy()[pre])
    rows = [("policy greedy", *(f"{c:.3f} / {s:.3f}" for c, s in pol)), ("controller probe on its aux", *(f"{c:.3f} / {s:.3f}" for c, s in prb))]
    print_table(f"first action in pre-grasp windows of {len(held)} held-out episodes ({int(pre.sum())} windows): corr / slope",
                ["", "x", "y"], rows)
    print(f"aux object position error (cm, x / y): {obj_err[0]:.2f} / {obj_err[1]:.2f}")
    print(" ".join(f"{who}_{w}_{ax}={v:.3f}" for who, fits in (("policy", pol), ("probe", prb))
                   for ax, (c, s) in zip("xy", fits) for w, v in (("corr", c), ("slope", s)))
          + f" aux_obj_err_cm_x={obj_err[0]:.2f} aux_obj_err_cm_y={obj_err[1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="probe", required=True)
    a = sub.add_parser("anatomy")
    a.add_argument("--policy", required=True)
    a.add_argument("--seed", type=int, default=3_000_000)  # the tuning seeds: never the reporting ones
    a.add_argument("--episodes", type=int, default=20)
    a.add_argument("--execute-steps", type=int, default=None)
    b = sub.add_parser("localiser")
    b.add_argument("--store", required=True)
    b.add_argument("--steps", type=int, default=500)
    b.add_argument("--all-frames", action="store_true")
    c = sub.add_parser("offline")
    c.add_argument("--policy", required=True)
    c.add_argument("--store", required=True)
    c.add_argument("--episodes", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.probe == "anatomy":
        anatomy(args.policy, args.seed, args.episodes, args.execute_steps)
    elif args.probe == "offline":
        offline(args.policy, args.store, args.episodes)
    else:
        localiser(args.store, args.steps, args.all_frames)


if __name__ == "__main__":
    main()
