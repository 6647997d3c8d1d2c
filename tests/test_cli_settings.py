"""`wvl <command> --settings FILE`: a YAML file of config keys between the defaults and the command line (the loop
hands its robot process one)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from learning.cli import COMMANDS, ConfigKeyError, compose, main


def _robot(tmp_path, text: str, overrides: list[str] = ()):
    path = tmp_path / "robot_settings.yaml"
    path.write_text(text)
    return OmegaConf.to_container(compose("robot/robot", list(overrides), path, COMMANDS["robot"].open_blocks))


def test_settings_set_nested_keys_and_the_command_line_wins(tmp_path):
    c = _robot(tmp_path, "sink: link\nlink: {endpoint: 'tcp://127.0.0.1:6000', plaintext: true}\n"
                         "deploy: {episodes: 7, eval_seed: 5}\nsim: {image_size: 32, sim_hz: 200, camera_eye: [0.3, 0.2, 0.4]}\n",
               ["deploy.episodes=3", "sim.image_size=48"])
    assert c["sink"] == "link" and c["link"]["endpoint"] == "tcp://127.0.0.1:6000" and c["link"]["plaintext"] is True
    assert c["link"]["learner_key"] == "keys/learner.key"  # keys the file does not name keep their defaults
    assert c["deploy"]["episodes"] == 3 and c["deploy"]["eval_seed"] == 5  # the command line wins over the file
    assert c["sim"]["image_size"] == 48 and c["sim"]["kind"] == "maniskill"
    # sim is the simulator's own config: keys robot.yaml does not list are taken (ManiSkillConfig checks them)
    assert c["sim"]["sim_hz"] == 200 and c["sim"]["camera_eye"] == [0.3, 0.2, 0.4]


def test_bad_settings_files_are_refused_with_the_file_and_key_named(tmp_path):
    with pytest.raises(ConfigKeyError, match=r"robot_settings.yaml: unknown config key 'deploy.episodez'"):
        _robot(tmp_path, "deploy: {episodez: 3}\n")
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'camera.fps'"):
        _robot(tmp_path, "camera: {fps: 30}\n")  # only the open block (sim) takes new keys
    with pytest.raises(ValueError, match=r"robot_settings.yaml: expected a mapping of config keys, got list"):
        _robot(tmp_path, "- sink\n- link\n")
    with pytest.raises(ValueError, match=r"robot_settings.yaml: not YAML"):
        _robot(tmp_path, "sink: [link\n")
    with pytest.raises(FileNotFoundError, match=r"settings file .*missing.yaml does not exist"):
        compose("robot/robot", [], tmp_path / "missing.yaml")


def test_the_command_line_reports_a_bad_settings_file(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("deploy: {episodez: 3}\n")
    assert main(["robot", "deploy", "--settings", str(tmp_path / "s.yaml")]) == 2
    assert "unknown config key 'deploy.episodez'" in capsys.readouterr().err
    assert main(["robot", "deploy", "--settings"]) == 2
    assert "--settings needs a YAML file" in capsys.readouterr().err
