"""Output a new user should not see twice or at all (issue 21 item 10): eval-policy workers' INFO lines,
SAPIEN's libvulkan fallback warning when the project-local Vulkan driver is set up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest


@pytest.fixture
def root_level():
    root = logging.getLogger()
    old = root.level
    yield root
    root.setLevel(old)


def test_eval_workers_log_warnings_only_unless_debug(root_level):
    from learning.eval.policy_eval import worker_log_level

    root_level.setLevel(logging.INFO)  # wvl's default (WVL_LOG_LEVEL unset)
    assert worker_log_level() == logging.WARNING
    root_level.setLevel(logging.WARNING)
    assert worker_log_level() == logging.WARNING
    root_level.setLevel(logging.DEBUG)  # WVL_LOG_LEVEL=DEBUG: the workers' lines are wanted
    assert worker_log_level() == logging.DEBUG


def test_project_vulkan_silences_sapiens_loader_warning(tmp_path):
    pytest.importorskip("sapien")
    (tmp_path / "icd.json").write_text("{}")  # a project-local driver folder (never used: nothing renders here)
    env = {k: v for k, v in os.environ.items() if k not in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")}
    env["WVL_VULKAN_DIR"] = str(tmp_path)

    def stderr_of(code: str) -> str:
        return subprocess.run([sys.executable, "-W", "default", "-c", code], env=env, capture_output=True, text=True,
                              timeout=120, check=True).stderr

    from robot.sim.vulkan import SAPIEN_LOADER_WARNING

    if SAPIEN_LOADER_WARNING not in stderr_of("import sapien"):
        pytest.skip("this machine has a system libvulkan: SAPIEN does not warn")
    out = stderr_of("from robot.sim.vulkan import configure_vulkan\n"
                    "assert configure_vulkan() == 'lavapipe', 'not the project-local driver'\nimport sapien")
    assert SAPIEN_LOADER_WARNING not in out, out
