"""The README's commands run from the repo root write keys, artifacts and spools there: git must ignore them
(a committed `*.key_secret` is a leaked robot identity)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["keys/robot-1.key_secret", "keys/learner.key", "somewhere/else/robot-2.key_secret",
                                  "artifacts/sft-0/policy.onnx", "outbox/robot/x.episode", "policies/robot/state.json",
                                  "exports/ep.mcap"])
def test_outputs_and_secrets_are_ignored(path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    assert r.returncode == 0, f"{path} is not ignored by .gitignore"
