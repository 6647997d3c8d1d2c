"""`wvl`: one command line for the whole loop.

    wvl <command> [mode] [--settings FILE] [key=value ...]

Each command composes a Hydra config (package data under learning/conf/ or robot/conf/), then the keys of a YAML
settings file (``--settings``, nested like the config), then `key=value` overrides (the command line wins); an
unknown key is refused with the list of valid ones. Commands are imported lazily so that the robot-side ones
(`wvl robot`, `wvl keys`) never import torch.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("wvl")


@dataclass(frozen=True)
class Command:
    help: str
    target: str  # "module:function(cfg: DictConfig, mode: str | None) -> int | None"
    config: str  # "<package>/<name>": learning/conf/<name>.yaml or robot/conf/<name>.yaml
    modes: tuple[str, ...] = ()  # allowed positional mode words; the first is the default
    # blocks in which a settings file may add keys the YAML does not list (on the command line `+key=value` adds
    # anywhere): blocks whose values a typed config checks
    open_blocks: tuple[str, ...] = ()


# Only commands that work are listed. Each area adds its line here.
COMMANDS: dict[str, Command] = {
    "collect": Command(
        "collect SANS episodes (scripted success + near-success) on the simulated robot into an episode store",
        "learning.data.collect:main", "learning/collect", modes=("sim",),
    ),
    "view": Command(
        "render episodes of a store to MP4/GIF (and a rerun .rrd) with outcome and reward drawn on the frames",
        "learning.data.view:main", "learning/view",
    ),
    "export-mcap": Command(
        "export episodes of a store to MCAP with ROS 2 messages (Foxglove / rosbag2)",
        "learning.data.mcap_export:main", "learning/export_mcap",
    ),
    "train-wm": Command(
        "train (or refine from init_from) the action-conditioned Cosmos world model with its reward head on SANS windows",
        "learning.world_model.train:main", "learning/train_wm",
    ),
    "eval-wm": Command(
        "replay held-out episodes in a world model: reward/visual alignment, PSNR/SSIM per outcome, side-by-side videos -> wm_eval.json",
        "learning.eval.world_model:main", "learning/eval_wm",
    ),
    "sft": Command(
        "behaviour-clone a VLA policy on a store's demonstrations (validation loss, checkpoints, resume)",
        "learning.policy.sft:main", "learning/sft",
    ),
    "export": Command(
        "export a policy to ONNX + manifest (the robot's artifact), checked against PyTorch",
        "learning.policy.export:main", "learning/export",
    ),
    "eval-policy": Command(
        "success rate (95% Wilson CI) of a policy artifact on the simulated robot, via the robot's PolicyRuntime",
        "learning.eval.policy_eval:main", "learning/eval_policy",
    ),
    "robot": Command(
        "the robot in one process (no ROS): camera + arm + policy/teleop + safety filter + outbox; `collect` = SANS teleop session",
        "robot.main:main", "robot/robot", modes=("run", "collect", "deploy"),
        open_blocks=("sim",),  # the simulator's own config (ManiSkillConfig | LiberoConfig) takes more keys; it refuses unknown ones
    ),
    "calibrate": Command(
        "camera calibration: print the ChArUco board, intrinsics, hand-eye (eye-in-hand / eye-to-hand), drift check",
        "calibration.cli:main", "robot/calibrate", modes=("board", "intrinsics", "handeye", "check"),
    ),
    "grpo": Command(
        "GRPO in imagination: the policy samples action chunks inside a world model; the reward head scores (no robot time)",
        "learning.rl.grpo:main", "learning/grpo",
    ),
    "loop": Command(
        "the co-evolution loop: SANS -> SFT -> world model -> [refine -> GRPO -> deploy over the link -> evaluate] x N, with a report",
        "learning.loop:main", "learning/loop",
    ),
    "keys": Command(
        "create a CURVE key pair for the learner link (learner or robot); prints where to copy the public key",
        "robot.keys:main", "robot/keys",
    ),
    "serve": Command(
        "run the learner server: robots upload episodes into a store over ZeroMQ, policies are pushed back",
        "learning.server.cli:main", "learning/serve",
    ),
}


class ConfigKeyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _conf_dir(config: str) -> tuple[Path, str]:
    pkg, name = config.split("/", 1)
    return Path(str(importlib.resources.files(pkg))) / "conf", name


def _flatten_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            full = f"{prefix}{k}"
            keys.append(full)
            keys.extend(_flatten_keys(v, full + "."))
    return keys


def compose(config: str, overrides: list[str], settings: Path | None = None, open_blocks: tuple[str, ...] = ()) -> DictConfig:
    """Compose learning/conf/<name>.yaml (or robot/conf/...), the keys of a ``settings`` YAML file, then key=value
    overrides; unknown keys are refused (a settings file may add keys inside ``open_blocks``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf_dir, name = _conf_dir(config)
    if not (conf_dir / f"{name}.yaml").exists():
        raise FileNotFoundError(f"config file {conf_dir / name}.yaml is missing from the installation")
    # Config-group choices (`sim=libero`) change which keys exist (`sim.suite`): validate against them.
    groups = [ov for ov in overrides if "=" in ov and "." not in ov.split("=", 1)[0]
              and (conf_dir / ov.split("=", 1)[0]).is_dir()]
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        try:
            base = hydra_compose(config_name=name, overrides=groups)
        except (HydraException, OmegaConfBaseException) as e:
            raise ValueError(f"config {conf_dir / name}.yaml: {e}") from e
        valid = _flatten_keys(OmegaConf.to_container(base, resolve=False))
        for ov in overrides:
            if "=" not in ov:
                raise ConfigKeyError(f"argument {ov!r} is not key=value")
            key = ov.split("=", 1)[0].lstrip("+~")
            if ov.startswith(("+", "~")) or ov in groups:  # a config-group choice (sim=libero, preset=quick)
                continue
            if key not in valid:
                top = sorted(k for k in valid if "." not in k)
                raise ConfigKeyError(f"unknown config key {key!r} for this command; valid keys: {', '.join(top)}")
        try:
            cfg = hydra_compose(config_name=name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as e:
            raise ValueError(f"bad override: {str(e).splitlines()[0]}") from e
    if settings is not None:
        given = {ov.split("=", 1)[0].lstrip("+~") for ov in overrides if ov not in groups}
        _apply_settings(cfg, Path(settings), given, set(valid), open_blocks)
    return cfg


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) for every non-mapping value of a nested mapping."""
    out: list[tuple[str, object]] = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        out.extend(_leaves(v, key + ".") if isinstance(v, dict) and v else [(key, v)])
    return out


def _apply_settings(cfg: DictConfig, path: Path, given: set[str], valid: set[str], open_blocks: tuple[str, ...]) -> None:
    """Set the keys of a settings file on the composed config, except those the command line sets (it wins)."""
    import yaml
    from omegaconf import open_dict

    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"settings file {path}: not YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"settings file {path}: expected a mapping of config keys, got {type(data).__name__}")
    leaves = _leaves(data)
    for key, _ in leaves:
        if key not in valid and key.split(".", 1)[0] not in open_blocks:
            top = sorted(k for k in valid if "." not in k)
            raise ConfigKeyError(f"settings file {path}: unknown config key {key!r} for this command; valid keys: {', '.join(top)}")
    with open_dict(cfg):
        for key, value in leaves:
            if not any(key == g or key.startswith(g + ".") for g in given):
                OmegaConf.update(cfg, key, value, merge=False)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: wvl <command> [mode] [--settings FILE] [key=value ...]", "", "commands:"]
    lines += [f"  {n:<{width}}  {c.help}" for n, c in COMMANDS.items()]
    lines += ["", "`wvl <command> --help` shows a command's config keys, their defaults and what each one does."]
    return "\n".join(lines)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line.strip() else line for line in text.rstrip("\n").splitlines())


def _config_text(config: str) -> str:
    """The command's YAML file as written (every key with its `#` description), then each config-group file
    its `defaults:` list chooses, indented under the group's key, with the group's other choices named."""
    import yaml

    conf_dir, name = _conf_dir(config)
    path = conf_dir / f"{name}.yaml"
    text = path.read_text()
    shown = f"{conf_dir.parent.name}/conf"  # learning/conf or robot/conf, as the repository names it
    parts = [f"# {shown}/{name}.yaml", text.rstrip("\n")]
    for entry in (yaml.safe_load(text) or {}).get("defaults") or []:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue  # _self_
        (group, choice), = entry.items()
        group = str(group).removeprefix("override ").strip("/")
        if choice is None or not (conf_dir / group).is_dir():
            continue
        choices = sorted(f.stem for f in (conf_dir / group).glob("*.yaml"))
        gtext = (conf_dir / group / f"{choice}.yaml").read_text()
        parts += ["", f"# {group}: {choice} (choices: {', '.join(choices)}; pick one with {group}=<choice>): {shown}/{group}/{choice}.yaml"]
        if "@package _global_" in gtext:
            parts.append(f"# (@package _global_: the {group} file sets the top-level keys it names, over the values above)")
        parts += [f"{group}:", _indent(gtext)]
    return "\n".join(parts) + "\n"


def _command_help(name: str, cmd: Command) -> str:
    compose(cmd.config, [])  # the defaults compose (a broken config file fails here, not later)
    modes = f" [{'|'.join(cmd.modes)}]" if cmd.modes else ""
    return (f"wvl {name}{modes} [--settings FILE] [key=value ...]\n\n{cmd.help}\n\n"
            f"config (key: default  # description; override any key with key=value, nested ones as a.b=value, "
            f"or many at once with a YAML file of them, nested the same way: --settings FILE):\n\n"
            f"{_config_text(cmd.config)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("WVL_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"wvl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    try:
        if any(a in ("-h", "--help") for a in rest):
            print(_command_help(name, cmd))
            return 0
        settings = None
        if "--settings" in rest:
            i = rest.index("--settings")
            if i + 1 >= len(rest):
                raise ValueError("--settings needs a YAML file")
            settings = Path(rest[i + 1])
            rest = rest[:i] + rest[i + 2:]
        mode = None
        if cmd.modes:
            mode = cmd.modes[0]
            if rest and "=" not in rest[0]:
                mode = rest.pop(0)
                if mode not in cmd.modes:
                    raise ConfigKeyError(f"unknown mode {mode!r}; valid: {', '.join(cmd.modes)}")
        cfg = compose(cmd.config, rest, settings, cmd.open_blocks)
        module, func = cmd.target.split(":")
        rc = getattr(importlib.import_module(module), func)(cfg, mode)
        return int(rc or 0)
    except KeyboardInterrupt:
        print(f"wvl {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback with WVL_DEBUG=1
        if os.environ.get("WVL_DEBUG"):
            raise
        if isinstance(e, (ValueError, KeyError, FileNotFoundError, PermissionError, RuntimeError, ImportError, ConnectionError, TimeoutError, OSError)):
            print(f"wvl {name}: error: {e}", file=sys.stderr)
            return 2
        print(f"wvl {name}: unexpected {type(e).__name__}: {e} (rerun with WVL_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
