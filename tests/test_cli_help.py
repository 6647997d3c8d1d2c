"""`wvl <command> --help` shows every config key with a description (issue 21 item 7): every config file, every command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from learning.cli import COMMANDS, _command_help, compose, main

ROOT = Path(__file__).resolve().parents[1]
CONF_FILES = sorted([*ROOT.glob("learning/conf/**/*.yaml"), *ROOT.glob("robot/conf/**/*.yaml")])
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_0-9]+):(.*)$")


def _flow_keys(value, prefix: str) -> list[str]:
    out = []
    for k, v in value.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += _flow_keys(v, f"{prefix}{k}.")
    return out


def documented_keys(text: str) -> dict[str, bool]:
    """Every key path in a YAML-like text -> whether it has a description: a `#` comment on its own line, or
    comment-only line(s) directly above it. Keys of a flow mapping (`a: {b: 1}`) share their line's comment."""
    keys: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    comment_above = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment_above = False
            continue
        if stripped.startswith("#"):
            comment_above = True
            continue
        m = KEY_LINE.match(line)
        if not m:  # a list item (`- sim: maniskill`) or a continuation
            comment_above = False
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        value, hash_, _ = rest.partition(" #")
        described = comment_above or bool(hash_) or rest.strip().startswith("#")
        keys[path] = keys.get(path, False) or described
        value = value.strip()
        if value.startswith("{"):
            for sub in _flow_keys(yaml.safe_load(value) or {}, path + "."):
                keys[sub] = keys.get(sub, False) or described
        if not value or value.startswith("#"):
            stack.append((indent, key))
        comment_above = False
    return keys


def _leaves(cfg, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_parser_sees_missing_descriptions():
    keys = documented_keys("a: 1  # yes\nb:\n  # about c\n  c: 2\n  d: {e: 1, f: {g: 2}}\nh: [1]\n")
    assert keys == {"a": True, "b": False, "b.c": True, "b.d": False, "b.d.e": False, "b.d.f": False, "b.d.f.g": False,
                    "h": False}


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_key_of_every_config_file_has_a_description(path):
    missing = [k for k, ok in documented_keys(path.read_text()).items() if not ok]
    assert not missing, f"{path.relative_to(ROOT)}: keys without a # description: {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_describes_every_key_of_the_composed_defaults(name, capsys):
    cmd = COMMANDS[name]
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text == _command_help(name, cmd) + "\n"
    documented = documented_keys(text.split("\n\n", 3)[3])
    leaves = _leaves(OmegaConf.to_container(compose(cmd.config, []), resolve=False))
    assert leaves
    # A group file indented under its key (`sim:`) gives `sim.kind`; a `@package _global_` one (`preset:`)
    # sets top-level keys, shown as `preset.iterations`: match that by suffix.
    missing = [leaf for leaf in leaves
               if not any(ok and (p == leaf or p.endswith("." + leaf)) for p, ok in documented.items())]
    assert not missing, f"wvl {name} --help: keys without a description: {missing}"


def test_help_shows_the_group_file_and_its_choices(capsys):
    assert main(["collect", "--help"]) == 0
    text = capsys.readouterr().out
    assert "# learning/conf/collect.yaml" in text
    assert "# sim: maniskill (choices: libero, maniskill;" in text
    sim_text = (ROOT / "learning/conf/sim/maniskill.yaml").read_text()
    assert "\n".join("  " + line if line.strip() else line for line in sim_text.strip().splitlines()) in text
    assert main(["loop", "--help"]) == 0
    assert "# preset: default (choices: default, libero, paper, quick;" in capsys.readouterr().out
