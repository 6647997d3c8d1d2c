"""Action faithfulness: expert cases from the same seeds, judged by the simulator and by a (tiny, real) world model."""

import json

import numpy as np
import pytest

pytest.importorskip("mani_skill")

from learning.eval.faithfulness import case_of, collect_cases, faithfulness_table  # noqa: E402
from learning.eval.success_classifier import train_success_classifier  # noqa: E402
from learning.eval.world_model import evaluate_world_model  # noqa: E402
from learning.world_model.model import WorldModel  # noqa: E402
from tests.world_model.conftest import tiny_config  # noqa: E402

pytestmark = pytest.mark.sim


def test_cases_share_their_start_and_the_table_sets_the_simulator_beside_the_world_model(tmp_path):
    store = collect_cases({"kind": "maniskill", "image_size": 32}, "PickCube-v1", [600001, 600003], [5.0], tmp_path / "cases")
    infos = [json.loads(store.row(i)["info_json"]) for i in range(len(store))]
    assert [case_of(i)[0] for i in infos[:3]] == ["none", "grasp_offset", "place_offset"]
    assert {case_of(i)[1] for i in infos if i["perturbation"] != "none"} == {5.0}
    for a, b in ((0, 1), (0, 2)):  # the same start frame for the expert and its perturbed twins
        assert infos[a]["seed"] == infos[b]["seed"]
        assert np.abs(store.frames(a)[0].astype(int) - store.frames(b)[0].astype(int)).mean() < 3  # up to the video codec
    sim_ok = {case_of(i)[0]: store.row(n)["outcome"] == "success" for n, i in enumerate(infos[:3])}
    assert sim_ok["none"] and not sim_ok["grasp_offset"] and not sim_ok["place_offset"]  # 5 cm off fails
    wm = WorldModel.from_wm_config(tiny_config()).eval()
    res = evaluate_world_model(wm, store, classifier=train_success_classifier([store], steps=2), seed=0)
    rows = faithfulness_table(res, store)
    assert [(r["kind"], r["size_cm"]) for r in rows] == [("none", 0.0), ("grasp_offset", 5.0), ("place_offset", 5.0)]
    assert sum(r["episodes"] for r in rows) == len(store)
    by = {r["kind"]: r for r in rows}
    assert by["none"]["sim_success"] == 1.0 and by["grasp_offset"]["sim_success"] == 0.0
    for r in rows:  # agreement is the share of cases whose verdict matches the simulator's
        assert r["reward_agreement"] == pytest.approx(1.0 - abs(r["reward_success"] - r["sim_success"]))
