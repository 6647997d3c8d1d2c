"""World-model alignment per real outcome class, and its balanced accuracy.

An episode is *aligned* when the world model's verdict (success or not: its reward head, or the independent
success classifier on its frames) equals the real outcome (``outcome == "success"``). One number over all
episodes hides which mistake is made: the loop's rollouts of a policy that never succeeds are all failures, so
their alignment only counts false positives (a failure called a success) and says nothing about whether the
world model recognises a success. So alignment is reported separately on the real classes:

- ``per_class[c]``: ``{"n": episodes whose real outcome is c, "aligned": how many of them were aligned,
  "alignment": aligned / n}`` for c in success, near_success, failure (always listed; a class with no episode
  has ``n = 0`` and ``alignment = None``, never 1.0) and unlabeled (listed only when present; its real outcome is
  unknown, it is judged as "not a success" as the overall number always did, and it is left out of the
  balanced accuracy);
- ``balanced_accuracy``: the mean of ``per_class[c]["alignment"]`` over the labelled classes present (None
  when none is);
- ``overall``: aligned / all episodes (the single number reported before).

A model without a reward head has no reward verdict: its reward alignments are all None (``n`` still counts
the episodes). Pure Python: `wvl eval-wm` and the loop's judge both call `alignment_by_class`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from robot.episode import OUTCOMES

LABELLED = tuple(o for o in OUTCOMES if o != "unlabeled")  # the real classes: success, near_success, failure
CLASS_SHORT = {"success": "S", "near_success": "NS", "failure": "F", "unlabeled": "U"}
JUDGES = {"reward": "reward_aligned", "visual": "visual_aligned"}  # judge -> the per-episode row key


def class_alignment(outcomes: list[str], aligned: list[bool | float | None]) -> dict[str, Any]:
    """Per-class alignment of one judge. ``outcomes[i]``: episode i's real outcome (one of `OUTCOMES`);
    ``aligned[i]``: whether the judge's verdict matched it (None: this judge gave no verdict)."""
    if len(outcomes) != len(aligned):
        raise ValueError(f"aligned: {len(aligned)} values for {len(outcomes)} outcomes")
    unknown = sorted({o for o in outcomes if o not in OUTCOMES})
    if unknown:
        raise ValueError(f"outcome: {unknown} not in {list(OUTCOMES)}")
    classes = list(LABELLED) + (["unlabeled"] if "unlabeled" in outcomes else [])
    per_class: dict[str, dict[str, Any]] = {}
    for c in classes:
        verdicts = [bool(a) for o, a in zip(outcomes, aligned) if o == c and a is not None]
        n = sum(o == c for o in outcomes)
        per_class[c] = {"n": n, "aligned": sum(verdicts) if verdicts else None,
                        "alignment": sum(verdicts) / len(verdicts) if verdicts else None}
    present = [per_class[c]["alignment"] for c in LABELLED if per_class[c]["alignment"] is not None]
    judged = [bool(a) for a in aligned if a is not None]
    return {"overall": sum(judged) / len(judged) if judged else None,
            "balanced_accuracy": sum(present) / len(present) if present else None,
            "per_class": per_class}


def no_success_note(n: int) -> str:
    return (f"no real success among the {n} episodes: alignment here only measures false positives (a real failure "
            "or near-success called a success), not whether the world model recognises a success")


def alignment_by_class(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Reward and visual alignment per real class from per-episode rows (keys ``outcome``, ``reward_aligned``,
    ``visual_aligned``, as `evaluate_world_model` writes them). Returns::

        {"episodes": n, "counts": {class: n}, "real_successes": s, "note": str | None,
         "reward": {"overall": x | None, "balanced_accuracy": x | None, "per_class": {class: {"n", "aligned", "alignment"}}},
         "visual": {...}}

    ``note`` says so when there is no real success (see `no_success_note`).
    """
    rows = list(rows)
    outcomes = [str(r["outcome"]) for r in rows]
    out: dict[str, Any] = {"episodes": len(rows)}
    for judge, key in JUDGES.items():
        out[judge] = class_alignment(outcomes, [r.get(key) for r in rows])
    out["counts"] = {c: s["n"] for c, s in out["reward"]["per_class"].items()}
    out["real_successes"] = out["counts"]["success"]
    out["note"] = no_success_note(len(rows)) if rows and not out["real_successes"] else None
    return out


def format_class_cell(stats: Mapping[str, Any]) -> str:
    """``{"n", "alignment"}`` -> "91.7% (n=12)", or "n/a (n=0)" for a class with no episode (or no verdict)."""
    a = stats.get("alignment")
    return f"{'n/a' if a is None else f'{100 * a:.1f}%'} (n={stats.get('n', 0)})"
