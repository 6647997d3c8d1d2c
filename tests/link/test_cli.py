"""`wvl keys` and `wvl serve` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil

from learning.cli import main
from robot import wire
from tests.link.policy_fixtures import make_policy


def test_wvl_keys_writes_a_pair_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["keys", "name=robot-9", f"out={tmp_path}"]) == 0
    assert "allow-list" in capsys.readouterr().out
    public, _ = wire.load_keypair(tmp_path / "robot-9.key_secret")
    assert wire.load_public(tmp_path / "robot-9.key") == public
    assert main(["keys", "name=robot-9", f"out={tmp_path}"]) == 2
    assert "overwrite=true" in capsys.readouterr().err
    assert main(["keys", "name=robot-9", f"out={tmp_path}", "overwrite=true"]) == 0
    assert wire.load_public(tmp_path / "robot-9.key") != public
    assert main(["keys", "name=../x", f"out={tmp_path}"]) == 2


def test_wvl_serve_publishes_and_stops(tmp_path, capsys):
    assert main(["keys", f"out={tmp_path / 'k'}"]) == 0
    (tmp_path / "allow").mkdir()
    make_policy(tmp_path / "p", "loop-1")
    rc = main(["serve", "endpoint=tcp://127.0.0.1:*", f"store={tmp_path / 'store'}", f"keys.secret={tmp_path / 'k' / 'learner.key_secret'}",
               f"keys.allow={tmp_path / 'allow'}", f"policy={tmp_path / 'p'}", "run_s=0.3"])
    assert rc == 0 and "serving on tcp://127.0.0.1:" in capsys.readouterr().out
    current = json.loads((tmp_path / "store" / ".link" / "policies" / "current.json").read_text())
    assert current["dir"].startswith("loop-1-")
    shutil.rmtree(tmp_path / "allow")
    assert main(["serve", f"store={tmp_path / 'store'}", f"keys.secret={tmp_path / 'k' / 'learner.key_secret'}",
                 f"keys.allow={tmp_path / 'allow'}", "run_s=0.1"]) == 2
    assert "allow list folder" in capsys.readouterr().err
    assert main(["serve", "nonsense=1"]) == 2
