"""Action faithfulness of world models (issue 15, item 2): the simulator's outcome vs the imagined one, per
perturbation kind and size, from the same starts (learning/eval/faithfulness.py).

    .venv/bin/python bench/wm_faithfulness.py --world-models baseline=<ckpt> other=<ckpt> \
        --classifier <success classifier folder> --cases /tmp/faithfulness_cases --seed 600000 --seeds 24

The cases (expert episodes, unperturbed and perturbed) are collected once into --cases (held-out seeds: SANS
collection uses 0+, evaluations 1,000,000+) and reused. Prints one table per world model and, as the last line,
name=value pairs: each model's agreement with the simulator over all cases (reward head, classifier).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.data.store import EpisodeStore  # noqa: E402
from learning.eval.faithfulness import collect_cases, faithfulness_table  # noqa: E402
from learning.eval.world_model import evaluate_world_model  # noqa: E402
from robot.console import print_table  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-models", nargs="+", required=True, help="name=checkpoint folder")
    p.add_argument("--classifier", required=True)
    p.add_argument("--cases", required=True, help="store of the cases (collected when absent)")
    p.add_argument("--task", default="PickCube-v1")
    p.add_argument("--seed", type=int, default=600000)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--sizes", default="1.5,3,5", help="perturbation sizes, cm")
    p.add_argument("--out", default=None, help="write the tables as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    if not (Path(args.cases) / "meta").exists():
        sizes = [float(x) for x in args.sizes.split(",")]
        collect_cases({"kind": "maniskill"}, args.task, range(args.seed, args.seed + args.seeds), sizes, args.cases)
    cases = EpisodeStore(args.cases, create=False)
    summary, tables = [], {}
    for spec in args.world_models:
        name, ckpt = spec.split("=", 1)
        res = evaluate_world_model(ckpt, cases, classifier=args.classifier, seed=0)
        rows = faithfulness_table(res, cases)
        tables[name] = rows

        def pct(x):
            return "-" if x is None else f"{100 * x:.0f}%"

        print_table(f"action faithfulness of {name} ({ckpt}) on {len(cases)} cases",
                    ["perturbation", "size cm", "episodes", "sim success", "WM reward success", "agree", "classifier on imagined", "agree"],
                    [(r["kind"], f"{r['size_cm']:.1f}", str(r["episodes"]), pct(r["sim_success"]), pct(r["reward_success"]),
                      pct(r["reward_agreement"]), pct(r["classifier_success"]), pct(r["classifier_agreement"])) for r in rows])
        n = np.array([r["episodes"] for r in rows])
        agree = np.array([r["reward_agreement"] or 0.0 for r in rows])
        cl = np.array([r["classifier_agreement"] for r in rows])
        summary.append(f"{name}_reward_agreement={float((agree * n).sum() / n.sum()):.3f} {name}_classifier_agreement={float((cl * n).sum() / n.sum()):.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(tables, indent=2))
    print(" ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
