"""Policies down: verified download, swap only between episodes, rollback, refusals (corrupted artifact, failed
validation, a learner with another key), and the running version reported back."""

from __future__ import annotations

import time

import pytest

from robot.policy_artifact import ArtifactError
from tests.link.policy_fixtures import make_policy, ort_validate
from tests.link.conftest import wait_for


def _running(server, robot="robot-1"):
    return server.robot_status().get(robot, {}).get("running")


def test_policy_is_staged_swapped_between_episodes_and_reported(make_server, make_outbox, make_inbox, tmp_path):
    server = make_server()
    make_policy(tmp_path / "v1", "v1")
    server.publish_policy(tmp_path / "v1")
    inbox = make_inbox()
    make_outbox(server.endpoint, inbox=inbox)
    wait_for(lambda: inbox.ready_version == "v1", 20, "v1 ready")
    time.sleep(0.3)
    assert inbox.running_version is None  # never swapped by the link thread
    wait_for(lambda: server.robot_status()["robot-1"]["ready"] == "v1", 5, "ready reported")
    m = inbox.swap_if_ready()  # the control loop, between episodes
    assert m.policy_version == "v1" and inbox.running_version == "v1"
    assert (inbox.current_folder / "policy.onnx").exists()
    wait_for(lambda: _running(server) == "v1", 5, "running version reported to the learner")
    assert inbox.swap_if_ready() is None  # nothing new

    make_policy(tmp_path / "v2", "v2", seed=1)
    server.publish_policy(tmp_path / "v2")  # pushed to the connected robot at once
    wait_for(lambda: inbox.ready_version == "v2", 20, "v2 ready")
    assert inbox.swap_if_ready().policy_version == "v2"
    assert inbox.previous_version == "v1"
    wait_for(lambda: _running(server) == "v2", 5, "v2 reported")
    assert inbox.rollback().policy_version == "v1"
    assert inbox.running_version == "v1" and inbox.previous_version is None
    wait_for(lambda: _running(server) == "v1", 5, "rollback reported")
    assert inbox.rollback() is None  # nothing further back: unchanged
    assert server.counters()["policies_published"] == 2


def test_state_survives_a_restart_and_a_damaged_current_falls_back(make_server, make_outbox, make_inbox, tmp_path):
    server = make_server()
    inbox = make_inbox()
    ob = make_outbox(server.endpoint, inbox=inbox)
    for v in ("v1", "v2"):
        make_policy(tmp_path / v, v, seed=len(v))
        server.publish_policy(tmp_path / v)
        wait_for(lambda: inbox.ready_version == v, 20, f"{v} ready")
        inbox.swap_if_ready()
    ob.close()
    again = make_inbox()
    assert (again.running_version, again.previous_version) == ("v2", "v1")
    (again.current_folder / "policy.onnx").write_bytes(b"garbage")  # the disk ate it
    third = make_inbox()
    assert third.running_version == "v1"  # verified on load; fell back to the previous policy


def test_corrupted_artifact_is_refused_and_the_old_policy_keeps_running(make_server, make_outbox, make_inbox, tmp_path):
    server = make_server()
    inbox = make_inbox()
    make_policy(tmp_path / "v1", "v1")
    server.publish_policy(tmp_path / "v1")
    ob = make_outbox(server.endpoint, inbox=inbox)
    wait_for(lambda: inbox.ready_version == "v1", 20, "v1 ready")
    inbox.swap_if_ready()
    ob.close()
    # v2 is published, then its bytes rot on the learner's disk before the robot fetches them.
    make_policy(tmp_path / "v2", "v2", seed=2)
    server.publish_policy(tmp_path / "v2")
    (blob,) = server.policies_dir.glob("v2-*/blob")
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    ob = make_outbox(server.endpoint, inbox=inbox)
    wait_for(lambda: ob.counters()["policies_rejected"] == 1, 20, "v2 refused")
    assert inbox.running_version == "v1" and inbox.ready_version is None and inbox.swap_if_ready() is None
    st = wait_for(lambda: server.robot_status()["robot-1"]["rejected"] == "v2" and server.robot_status()["robot-1"], 5, "refusal reported")
    assert "sha256" in st["reason"] and st["running"] == "v1"
    ob.close()
    ob = make_outbox(server.endpoint, inbox=inbox)  # re-offered on reconnect: not downloaded again
    wait_for(lambda: ob.counters()["connected"], 10, "reconnected")
    time.sleep(0.3)
    assert ob.counters()["policy_bytes_received"] == 0


def test_policy_that_fails_validation_is_refused(make_server, make_outbox, make_inbox, tmp_path):
    server = make_server()
    inbox = make_inbox()
    make_outbox(server.endpoint, inbox=inbox)
    make_policy(tmp_path / "wild", "wild", scale=3.0)  # actions leave [-1, 1]: the smoke inference catches it
    server.publish_policy(tmp_path / "wild")
    wait_for(lambda: server.robot_status().get("robot-1", {}).get("rejected") == "wild", 20, "refusal")
    assert "action bounds" in server.robot_status()["robot-1"]["reason"]
    assert inbox.ready_version is None and inbox.running_version is None
    assert not list(inbox.versions.iterdir()) and not list(inbox.staging.iterdir())


def test_a_policy_from_another_learner_key_is_refused(make_server, make_outbox, make_inbox, keys, tmp_path):
    """A rogue learner (its own key pair, the robot's key on its allow list) publishes a policy. The robot pins the
    real learner's public key, so the CURVE handshake fails and not one policy byte is accepted."""
    from robot import wire

    rogue_keys = wire.LearnerKeys.load(keys.dir / "rogue-learner.key_secret", keys.allow)
    rogue = make_server(store=tmp_path / "rogue-store", learner_keys=rogue_keys)
    make_policy(tmp_path / "evil", "evil")
    rogue.publish_policy(tmp_path / "evil")
    inbox = make_inbox()
    ob = make_outbox(rogue.endpoint, inbox=inbox)  # robot keys pin keys.dir/learner.key
    time.sleep(1.5)
    assert not ob.counters()["connected"] and ob.counters()["policy_bytes_received"] == 0
    assert inbox.ready_version is None and rogue.counters()["sessions"] == 0 and rogue.counters()["policy_bytes_sent"] == 0
    # The same robot, pinned to the rogue's key (a misconfiguration the operator made on purpose), would connect:
    # the pin is what protects it.
    ob2 = make_outbox(rogue.endpoint, folder=tmp_path / "other", robot_keys=keys.robot("robot-1", learner="rogue-learner"))
    wait_for(lambda: ob2.counters()["connected"], 10, "connection with the rogue key pinned")


def test_publishing_a_broken_artifact_fails_on_the_learner(make_server, tmp_path):
    server = make_server()
    make_policy(tmp_path / "v1", "v1")
    (tmp_path / "v1" / "policy.onnx").write_bytes(b"changed after hashing")
    with pytest.raises(ArtifactError, match="sha256"):
        server.publish_policy(tmp_path / "v1")
    with pytest.raises(ArtifactError, match="manifest.json"):
        server.publish_policy(tmp_path / "nothing-here")


def _offer_for(folder, version):
    import hashlib

    from robot.files import sha256_file
    from robot.policy_artifact import MANIFEST_FILE

    names = ["policy.onnx", MANIFEST_FILE]
    blob = b"".join((folder / n).read_bytes() for n in names)
    files = [(n, (folder / n).stat().st_size, sha256_file(folder / n)) for n in names]
    return {"version": version, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob), "files": files}, blob


def test_install_checks_every_file_and_the_hook_result(tmp_path):
    from robot.link.policy_inbox import PolicyInbox

    with pytest.raises(TypeError, match="validate"):
        PolicyInbox(tmp_path / "x", validate=None)
    make_policy(tmp_path / "v1", "v1")
    offer, blob = _offer_for(tmp_path / "v1", "v1")
    inbox = PolicyInbox(tmp_path / "inbox", validate=lambda folder: "looks fine", min_free_bytes=0)
    (tmp_path / "b").write_bytes(blob)
    assert not inbox.install(offer, tmp_path / "b") and "PolicyManifest" in inbox.status()["reason"]
    inbox = PolicyInbox(tmp_path / "inbox2", validate=ort_validate, min_free_bytes=0)
    (tmp_path / "b").write_bytes(blob + b"x")
    assert not inbox.install(offer, tmp_path / "b") and "longer" in inbox.status()["reason"]
    offer2 = {**offer, "version": "v1-renamed"}
    (tmp_path / "b").write_bytes(blob)
    assert not inbox.install(offer2, tmp_path / "b") and "differs from the offer" in inbox.status()["reason"]
    (tmp_path / "b").write_bytes(blob)
    assert inbox.install(offer, tmp_path / "b") and inbox.ready_version == "v1"
    assert not (tmp_path / "b").exists()  # the download is consumed either way
    assert not inbox.wants({**offer, "n_chunks": 1, "chunk_size": 4096})  # already ready: not fetched again
    full = PolicyInbox(tmp_path / "inbox3", validate=ort_validate, min_free_bytes=1 << 60)  # robot disk full
    assert not full.wants(offer) and "no disk room" in full.status()["reason"]
    assert full.wants(offer) is False and full.ready_version is None  # not recorded as refused: retried next offer
    small = PolicyInbox(tmp_path / "inbox4", validate=ort_validate, max_policy_bytes=10, min_free_bytes=0)
    assert not small.wants(offer) and small.status()["rejected"] == "v1"
