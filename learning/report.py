"""The loop's report: ``report.json`` (machine-readable), ``report.md`` (the table people read), a plot
(real vs imagined success per iteration) and side-by-side videos (real rollout | imagined rollout).

report.json schema::

    {"iterations": [{"iteration": k, "policy_version": str, "success_rate": float, "episodes": n, "successes": s,
                     "ci95": [lo, hi], "imagined_success": float | null, "grpo_imagined_success": float | null,
                     "reward_alignment": float | null, "visual_alignment": float | null,
                     "alignment": {"episodes": n, "counts": {class: n}, "real_successes": s, "note": str | null,
                                   "reward": {"overall": float | null, "balanced_accuracy": float | null,
                                              "per_class": {"success" | "near_success" | "failure" [| "unlabeled"]:
                                                            {"n": n, "aligned": int | null, "alignment": float | null}}},
                                   "visual": {...}},   # learning.eval.alignment; null alignment with n = 0: no episode
                     "sim_steps": {"training": 0, "evaluation": s, "total": s, "cumulative": s},
                     "seconds": {"refine_wm": s, "grpo": s, "export": s, "deploy_eval": s, "wm_eval": s}, ...}],
     "controls": [{"control": "oracle" | "filtered_bc", "policy_version": str, "success_rate": float, "episodes": n,
                   "successes": s, "ci95": [lo, hi], "sim_steps": {"training": s, "evaluation": s, "total": s},
                   "vs_sft": {"difference": d, "ci95": [lo, hi]}, "seconds": {"train": s, "export": s, "deploy_eval": s},
                   ...}],     # learning/controls.py; the extra fields say what each trained on
     "config": {...}, "comparisons": [{"iteration": k, "vs": 0, "difference": d, "ci95": [lo, hi]}],
     "started": iso, "finished": iso | null}

``sim_steps``: simulator control steps consumed: a row's evaluation episodes, plus for the oracle every training
rollout; ``cumulative`` (iterations): the evaluation steps of iterations 0..k, the real data iteration k's policy
was built and measured with.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from learning.data.video import encode_video
from learning.eval.alignment import CLASS_SHORT, LABELLED, format_class_cell

log = logging.getLogger(__name__)


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _steps(r: dict[str, Any]) -> str:
    s = r.get("sim_steps")
    if not s:
        return "-"
    return f"{s['total']} ({s['training']} + {s['evaluation']})" if s.get("training") else str(s["total"])


@dataclass
class LoopReport:
    folder: Path
    config: dict[str, Any]
    iterations: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    finished: str | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        if "sim_steps" in row:
            before = sum(r.get("sim_steps", {}).get("evaluation", 0) for r in self.iterations)
            row["sim_steps"] = {**row["sim_steps"], "cumulative": before + row["sim_steps"]["evaluation"]}
        self.iterations.append(row)
        self._compare()
        self.write()

    def add_control(self, row: dict[str, Any]) -> None:
        """A control's row (learning/controls.py), compared with iteration 0 (the SFT policy) like an iteration."""
        from learning.eval.stats import newcombe_difference

        if self.iterations:
            base = self.iterations[0]
            d, lo, hi = newcombe_difference(base["successes"], base["episodes"], row["successes"], row["episodes"])
            row = {**row, "vs_sft": {"difference": d, "ci95": [lo, hi]}}
        self.controls.append(row)
        self.write()

    def _compare(self) -> None:
        from learning.eval.stats import newcombe_difference

        self.comparisons = []
        if not self.iterations:
            return
        base = self.iterations[0]
        for row in self.iterations[1:]:
            d, lo, hi = newcombe_difference(base["successes"], base["episodes"], row["successes"], row["episodes"])  # row - base
            self.comparisons.append({"iteration": row["iteration"], "vs": base["iteration"], "difference": d, "ci95": [lo, hi]})

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "controls": self.controls, "comparisons": self.comparisons, "config": self.config,
                "started": self.started, "finished": self.finished, "notes": self.notes}

    def table_rows(self) -> list[list[str]]:
        rows = []
        for r in self.iterations:
            lo, hi = r["ci95"]
            rows.append([
                str(r["iteration"]), r["policy_version"], f"{_fmt(r['success_rate'])} [{_fmt(lo)}, {_fmt(hi)}]", str(r["episodes"]),
                _fmt(r.get("imagined_success")), _fmt(r.get("grpo_imagined_success")), _fmt(r.get("reward_alignment")),
                _fmt(r.get("visual_alignment")), _steps(r), f"{sum(r.get('seconds', {}).values()):.0f}",
            ])
        for r in self.controls:  # no world model: no imagined success, no alignment
            lo, hi = r["ci95"]
            rows.append([r["control"], r["policy_version"], f"{_fmt(r['success_rate'])} [{_fmt(lo)}, {_fmt(hi)}]", str(r["episodes"]),
                         "-", "-", "-", "-", _steps(r), f"{sum(r.get('seconds', {}).values()):.0f}"])
        return rows

    COLUMNS = ["iter", "policy", "real success [95% CI]", "n", "imagined", "GRPO imag.", "reward al.", "visual al.", "sim steps", "s"]

    CLASS_COLUMNS = ["iter", "judged", "reward al. S", "reward al. NS", "reward al. F", "reward bal. acc.",
                     "visual al. S", "visual al. NS", "visual al. F", "visual bal. acc."]

    def class_rows(self) -> list[list[str]]:
        """Alignment per real class of the judged rollouts (n/a (n=0) where there is none) and balanced accuracy."""
        rows = []
        for r in self.iterations:
            al = r.get("alignment")
            if not al:
                continue
            judged = " / ".join(f"{CLASS_SHORT[c]} {n}" for c, n in al["counts"].items())
            cells = [str(r["iteration"]), judged]
            for judge in ("reward", "visual"):
                cells += [format_class_cell(al[judge]["per_class"][c]) for c in LABELLED]
                cells.append(_fmt(al[judge]["balanced_accuracy"]) if al[judge]["balanced_accuracy"] is not None else "n/a")
            rows.append(cells)
        return rows

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".report.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=float))
        tmp.replace(self.folder / "report.json")
        lines = ["# World-VLA-Loop report", "", f"started {self.started}" + (f", finished {self.finished}" if self.finished else " (running)"), ""]
        lines += ["| " + " | ".join(self.COLUMNS) + " |", "|" + "---|" * len(self.COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in self.table_rows()]
        if self.comparisons:
            lines += ["", "Difference in real success vs iteration 0 (Newcombe 95% CI):", ""]
            for c in self.comparisons:
                lines.append(f"- iteration {c['iteration']}: {100 * c['difference']:+.1f} points [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]")
        vs = [r for r in self.controls if "vs_sft" in r]
        if vs:
            lines += ["", "Controls vs iteration 0 (the SFT policy), Newcombe 95% CI:", ""]
            for r in vs:
                d = r["vs_sft"]
                lines.append(f"- {r['control']}: {100 * d['difference']:+.1f} points [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]")
        lines += ["", "Columns: *n* = evaluation episodes; *real success* = the simulator's success flag over the robot process's evaluation episodes "
                  "(run through the ONNX policy runtime and the safety filter); *imagined success* = the same policy (greedy) "
                  "from the same first frames inside the world model used for that iteration; *GRPO imag.* = mean "
                  "imagined success of the sampled rollouts in the last GRPO step; *reward/visual al.* = that world "
                  "model replaying the real rollouts' actions, before it is refined on them (over all judged rollouts); "
                  "*sim steps* = simulator control steps consumed: the row's evaluation episodes, plus for the oracle every "
                  "training rollout (shown as training + evaluation; an iteration's policy was also built from the "
                  "earlier iterations' evaluation episodes: report.json sim_steps.cumulative); "
                  "*s* = wall seconds of the iteration or control (a control's: training, export, evaluation). "
                  "Controls (rows by name; learning/controls.py): *oracle* = GRPO from the SFT policy with the loop's GRPO "
                  "budget, rollouts and rewards from the simulator; *filtered_bc* = the SFT policy fine-tuned on the SANS "
                  "successes + the loop's successful real rollouts; no world model, so no imagined / alignment columns (-)."]
        class_rows = self.class_rows()
        if class_rows:
            lines += ["", "World-model alignment per real class of the judged rollouts (S = success, NS = near-success, "
                      "F = failure; n/a (n=0) = no rollout of that class; balanced accuracy = mean over the classes present):", ""]
            lines += ["| " + " | ".join(self.CLASS_COLUMNS) + " |", "|" + "---|" * len(self.CLASS_COLUMNS)]
            lines += ["| " + " | ".join(r) + " |" for r in class_rows]
            no_success = [r for r in self.iterations if (r.get("alignment") or {}).get("note")]
            if no_success:
                lines += [""] + [f"- iteration {r['iteration']}: {r['alignment']['note']}." for r in no_success]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        per_phase = [(r["iteration"], r.get("seconds", {})) for r in self.iterations] + [(r["control"], r.get("seconds", {})) for r in self.controls]
        if per_phase:
            phases = sorted({p for _, s in per_phase for p in s})
            lines += ["", "Wall time per phase (s):", "", "| iter | " + " | ".join(phases) + " |", "|---|" + "---|" * len(phases)]
            for k, s in per_phase:
                lines.append(f"| {k} | " + " | ".join(f"{s.get(p, 0):.0f}" for p in phases) + " |")
        (self.folder / "report.md").write_text("\n".join(lines) + "\n")
        self._plot()

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        if not self.iterations:
            return
        ks = [r["iteration"] for r in self.iterations]
        real = np.array([r["success_rate"] for r in self.iterations])
        lo = np.array([r["ci95"][0] for r in self.iterations])
        hi = np.array([r["ci95"][1] for r in self.iterations])
        imagined = [r.get("imagined_success") for r in self.iterations]
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        ax.errorbar(ks, 100 * real, yerr=[100 * (real - lo), 100 * (hi - real)], marker="o", capsize=4, label="real (simulator), 95% CI")
        if any(v is not None for v in imagined):
            ax.plot(ks, [100 * v if v is not None else np.nan for v in imagined], marker="s", linestyle="--", label="imagined (world model)")
        for r, style in zip(self.controls, (":", "-.", "--")):
            ax.axhline(100 * r["success_rate"], linestyle=style, color="grey", label=f"{r['control']} (real)")
        ax.set_xlabel("loop iteration (0 = SFT)")
        ax.set_ylabel("success rate (%)")
        ax.set_xticks(ks)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.folder / "success.png")
        plt.close(fig)

    def finish(self) -> None:
        self.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.write()


def side_by_side(real: np.ndarray, imagined: np.ndarray, path: Path, fps: float, scale: int = 4) -> None:
    """Write real | imagined frames (each (T, H, W, 3) uint8; the shorter holds its last frame) as one MP4."""
    import cv2

    T = max(len(real), len(imagined))

    def pad(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, np.repeat(v[-1:], T - len(v), 0)]) if len(v) < T else v

    both = np.concatenate([pad(real), pad(imagined)], axis=2)  # (T, H, 2W, 3)
    H, W2 = both.shape[1:3]
    big = np.stack([cv2.resize(f, (W2 * scale, H * scale), interpolation=cv2.INTER_NEAREST) for f in both])
    for f in big:
        cv2.putText(f, "real", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(f, "imagined", (W2 * scale // 2 + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_video(big, path, fps, crf=18)
