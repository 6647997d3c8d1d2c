"""How well can a judge of REAL frames tell the policy's successes from its failures? The ceiling of any imagined reward.

The success rule is the simulator's flag at the episode's end (`robot/sim/rollout.py`); the loop's judges (the reward
head, the success classifier) call an episode successful when *any* frame reads success. This trains the
success classifier's CNN (`learning.eval.success_classifier.SuccessClassifier`, 600 steps, balanced batches, the same
recipe, `train_on_frames`) on labelled real rollouts in three ways and scores both on held-out real rollouts, per class:

- ``any frame``: trained on every frame with its per-frame flag, an episode = any frame above 0.9 (the loop's rule);
- ``settled``: the same rule, trained on every frame labelled 1 only where the flag holds from there to the episode's
  end (a flag that rises and falls again - the cube brushed past the goal - is not the success the simulator counts);
- ``final frame``: trained on each episode's last ``--last`` frames labelled with the episode's outcome, an episode =
  its final frame above 0.5.

    .venv/bin/python bench/final_frame_judge.py --train <store of labelled policy rollouts> --test <another such store>

Last line: <judge>_acc=... <judge>_success=... <judge>_failure=... for judge in any_frame, settled, final_frame
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.data.store import EpisodeStore  # noqa: E402
from learning.eval.success_classifier import train_on_frames, train_success_classifier  # noqa: E402
from robot.console import print_table  # noqa: E402


def final_frames(store: EpisodeStore, last: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``last`` frames of every episode, each labelled with its episode's outcome."""
    frames, labels = [], []
    for i in range(len(store)):
        f = store.frames(i)[-last:]
        frames.append(f)
        labels.append(np.full(len(f), float(store.row(i)["outcome"] == "success"), np.float32))
    return np.concatenate(frames), np.concatenate(labels)


def settled(flags: np.ndarray) -> np.ndarray:
    """1 where the success flag holds from that frame to the episode's end, else 0."""
    return np.flip(np.minimum.accumulate(np.flip(flags > 0.5))).astype(np.float32)


def all_frames(store: EpisodeStore, label) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of every episode with ``label(per-frame flags)``."""
    return (np.concatenate([store.frames(i) for i in range(len(store))]),
            np.concatenate([label(store.success(i)) for i in range(len(store))]))


def scores(verdict: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Accuracy over all episodes, on the real successes, on the real failures."""
    return (float((verdict == truth).mean()), float(verdict[truth].mean()) if truth.any() else float("nan"),
            float((~verdict[~truth]).mean()) if (~truth).any() else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--last", type=int, default=2, help="final frames per training episode")
    ap.add_argument("--steps", type=int, default=600)
    a = ap.parse_args()
    torch.set_num_threads(1)
    train, test = EpisodeStore(a.train, create=False), EpisodeStore(a.test, create=False)
    truth = np.array([test.row(i)["outcome"] == "success" for i in range(len(test))])
    rows, last = [], {}

    t0 = time.perf_counter()
    any_model = train_success_classifier([train], steps=a.steps)
    any_verdict = np.array([any_model.predict(test.frames(i)).max() > 0.9 for i in range(len(test))])
    last["any_frame"] = scores(any_verdict, truth)
    rows.append(["any frame > 0.9 (the loop's rule)", "every frame, its flag", *[f"{100 * x:.0f}%" for x in last["any_frame"]],
                 f"{time.perf_counter() - t0:.0f}"])

    t0 = time.perf_counter()
    settled_model = train_on_frames(*all_frames(train, settled), steps=a.steps)
    settled_verdict = np.array([settled_model.predict(test.frames(i)).max() > 0.9 for i in range(len(test))])
    last["settled"] = scores(settled_verdict, truth)
    rows.append(["any frame > 0.9", "every frame, 1 where the flag holds to the end", *[f"{100 * x:.0f}%" for x in last["settled"]],
                 f"{time.perf_counter() - t0:.0f}"])

    t0 = time.perf_counter()
    final_model = train_on_frames(*final_frames(train, a.last), steps=a.steps)
    final_verdict = np.array([final_model.predict(test.frames(i)[-1:])[0] > 0.5 for i in range(len(test))])
    last["final_frame"] = scores(final_verdict, truth)
    rows.append(["final frame > 0.5", f"last {a.last} frames, the episode's outcome", *[f"{100 * x:.0f}%" for x in last["final_frame"]],
                 f"{time.perf_counter() - t0:.0f}"])

    print_table(f"real-frame judges trained on {len(train)} episodes ({a.train}), scored on {len(test)} held-out episodes "
                f"({int(truth.sum())} successes)", ["judge", "trained on", "accuracy", "on successes", "on failures", "train s"], rows)
    print(" ".join(f"{k}_{n}={v:.3f}" for k, (acc, s, f) in last.items() for n, v in (("acc", acc), ("success", s), ("failure", f))))


if __name__ == "__main__":
    main()
