"""The command YAML files show every default so that `wvl <command> --help` documents it, but the dataclass is the one
source: each value a YAML file restates must be the dataclass's default (a default changed in one place only fails
here)."""

import dataclasses
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _as_yaml(v):
    if dataclasses.is_dataclass(v):
        return None  # a nested config: checked on its own block
    return list(v) if isinstance(v, tuple) else v


def _blocks():
    from learning.policy.compact import CompactModelConfig
    from learning.policy.sft import HFConfig, SFTConfig
    from learning.rl.grpo import GRPOConfig
    from learning.world_model.config import TrainConfig, WorldModelConfig

    sft = yaml.safe_load((ROOT / "learning/conf/sft.yaml").read_text())
    grpo = yaml.safe_load((ROOT / "learning/conf/grpo.yaml").read_text())
    wm = yaml.safe_load((ROOT / "learning/conf/train_wm.yaml").read_text())
    return [("sft.yaml", sft, SFTConfig), ("sft.yaml model", sft["model"], CompactModelConfig), ("sft.yaml hf", sft["hf"], HFConfig),
            ("grpo.yaml grpo", grpo["grpo"], GRPOConfig), ("train_wm.yaml model", wm["model"], WorldModelConfig),
            ("train_wm.yaml train", wm["train"], TrainConfig)]


def test_yaml_defaults_are_the_dataclass_defaults():
    for name, block, cls in _blocks():
        names = {f.name for f in dataclasses.fields(cls)}
        assert not set(block) - names - {"dist"}, f"{name}: keys the config does not have: {sorted(set(block) - names)}"
        for f in dataclasses.fields(cls):
            default = _default(f)
            if default is dataclasses.MISSING or _as_yaml(default) is None:
                continue  # required (store, out) or a nested config
            assert f.name in block, f"{name}: {f.name} is not shown (its default: {default!r})"
            assert block[f.name] == _as_yaml(default), f"{name}: {f.name} is {block[f.name]!r}, {cls.__name__} says {default!r}"
