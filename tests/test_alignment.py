"""World-model alignment per real class (learning/eval/alignment.py) and where it is reported: the wm_eval table
and the loop's report.md / report.json. Hand-made rows, no world model."""

import json

import pytest

from learning.eval.alignment import alignment_by_class, class_alignment
from learning.eval.world_model import wm_eval_table_rows
from learning.report import LoopReport


def _rows(spec):
    """[(outcome, reward_aligned, visual_aligned), ...] -> episode rows as evaluate_world_model writes them."""
    return [{"outcome": o, "reward_aligned": r, "visual_aligned": v} for o, r, v in spec]


# 3 real successes (2 recognised by the reward head), no near-success, 4 failures (1 called a success)
MIXED = _rows([("success", 1.0, 1.0), ("success", 1.0, 0.0), ("success", 0.0, 0.0),
               ("failure", 1.0, 1.0), ("failure", 1.0, 1.0), ("failure", 1.0, 1.0), ("failure", 0.0, 1.0)])
# a policy that never succeeds: every rollout is a failure
NO_SUCCESS = _rows([("failure", 1.0, 1.0), ("failure", 0.0, 1.0), ("failure", 1.0, 1.0), ("failure", 1.0, 1.0)])


def test_per_class_alignment_and_balanced_accuracy_with_an_empty_class():
    al = alignment_by_class(MIXED)
    rw = al["reward"]
    assert rw["per_class"]["success"] == {"n": 3, "aligned": 2, "alignment": pytest.approx(2 / 3)}
    assert rw["per_class"]["failure"] == {"n": 4, "aligned": 3, "alignment": 0.75}
    # the empty class is n/a, not 100%, and stays out of the balanced accuracy
    assert rw["per_class"]["near_success"] == {"n": 0, "aligned": None, "alignment": None}
    assert rw["balanced_accuracy"] == pytest.approx((2 / 3 + 0.75) / 2)
    assert rw["overall"] == pytest.approx(5 / 7)
    vi = al["visual"]
    assert vi["per_class"]["success"]["alignment"] == pytest.approx(1 / 3) and vi["per_class"]["failure"]["alignment"] == 1.0
    assert vi["balanced_accuracy"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert al["counts"] == {"success": 3, "near_success": 0, "failure": 4} and al["real_successes"] == 3
    assert al["note"] is None and "unlabeled" not in rw["per_class"]


def test_no_real_success_says_alignment_only_measures_false_positives():
    al = alignment_by_class(NO_SUCCESS)
    assert al["real_successes"] == 0 and "no real success" in al["note"] and "false positives" in al["note"]
    assert al["reward"]["per_class"]["success"] == {"n": 0, "aligned": None, "alignment": None}
    assert al["reward"]["balanced_accuracy"] == 0.75 == al["reward"]["per_class"]["failure"]["alignment"]


def test_unlabeled_is_listed_but_not_balanced_and_a_missing_verdict_is_null():
    al = class_alignment(["success", "failure", "unlabeled"], [1.0, 1.0, 0.0])
    assert al["per_class"]["unlabeled"] == {"n": 1, "aligned": 0, "alignment": 0.0}
    assert al["balanced_accuracy"] == 1.0 and al["overall"] == pytest.approx(2 / 3)
    # no reward head: no verdict, so no alignment, while n still counts the episodes
    none = class_alignment(["success", "failure"], [None, None])
    assert none["per_class"]["success"] == {"n": 1, "aligned": None, "alignment": None}
    assert none["balanced_accuracy"] is None and none["overall"] is None
    assert alignment_by_class([])["reward"]["balanced_accuracy"] is None and alignment_by_class([])["note"] is None
    with pytest.raises(ValueError, match="outcome: \\['won'\\]"):
        class_alignment(["won"], [1.0])


def test_json_shape():
    al = json.loads(json.dumps(alignment_by_class(MIXED)))
    assert set(al) == {"episodes", "counts", "real_successes", "note", "reward", "visual"}
    for judge in ("reward", "visual"):
        assert set(al[judge]) == {"overall", "balanced_accuracy", "per_class"}
        assert list(al[judge]["per_class"]) == ["success", "near_success", "failure"]
        for stats in al[judge]["per_class"].values():
            assert set(stats) == {"n", "aligned", "alignment"}
    assert al["reward"]["per_class"]["near_success"]["alignment"] is None  # null in JSON, never 1.0


def test_wm_eval_table_shows_every_class_and_the_balanced_accuracy():
    al = alignment_by_class(MIXED)
    result = {"episodes": 7, "psnr": 20.0, "ssim": 0.5, "alignment": al,
              "per_outcome": {"success": {"psnr": 21.0, "ssim": 0.6}, "failure": {"psnr": 19.0, "ssim": 0.4}}}
    rows = {r[0]: r for r in wm_eval_table_rows(result)}
    assert rows["near_success"][1:4] == ("0", "n/a (n=0)", "n/a (n=0)")
    assert rows["success"][2] == "66.7% (n=3)" and rows["failure"][2] == "75.0% (n=4)"
    assert rows["balanced accuracy (S/F)"][2] == "70.8%" and rows["all"][2] == "71.4%"


def _iteration(k, rows):
    al = alignment_by_class(rows)
    return {"iteration": k, "policy_version": f"loop-{k}", "success_rate": 0.0, "successes": 0, "episodes": len(rows),
            "ci95": [0.0, 0.5], "imagined_success": 0.25, "grpo_imagined_success": None, "reward_alignment": al["reward"]["overall"],
            "visual_alignment": al["visual"]["overall"], "alignment": al, "seconds": {"wm_eval": 1.0}}


def test_loop_report_has_per_class_columns_per_iteration(tmp_path):
    report = LoopReport(tmp_path, {"task": "PickCube-v1"})
    report.add(_iteration(0, NO_SUCCESS))
    report.add(_iteration(1, MIXED))
    md = (tmp_path / "report.md").read_text()
    assert "| " + " | ".join(LoopReport.CLASS_COLUMNS) + " |" in md
    for col in ("reward al. S", "reward al. NS", "reward al. F", "reward bal. acc.", "visual al. S", "visual bal. acc."):
        assert col in LoopReport.CLASS_COLUMNS
    assert ("| 0 | S 0 / NS 0 / F 4 | n/a (n=0) | n/a (n=0) | 75.0% (n=4) | 75.0% | n/a (n=0) | n/a (n=0) | 100.0% (n=4) | 100.0% |"
            in md)
    assert "| 1 | S 3 / NS 0 / F 4 | 66.7% (n=3) | n/a (n=0) | 75.0% (n=4) | 70.8% |" in md
    assert "iteration 0: no real success among the 4 episodes" in md and "iteration 1: no real success" not in md
    saved = json.loads((tmp_path / "report.json").read_text())["iterations"]
    assert saved[0]["alignment"]["reward"]["per_class"]["success"] == {"n": 0, "aligned": None, "alignment": None}
    assert saved[1]["alignment"]["reward"]["balanced_accuracy"] == pytest.approx((2 / 3 + 0.75) / 2)
    # an old report row without per-class numbers still renders
    report.add({k: v for k, v in _iteration(2, MIXED).items() if k != "alignment"})
    assert "| 2 |" in (tmp_path / "report.md").read_text()
