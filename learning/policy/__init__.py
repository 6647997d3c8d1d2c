"""VLA policies behind one interface (`learning.policy.base`): the compact VLA that trains on a CPU and the
Hugging Face VLM adapter; SFT (`learning.policy.sft`) and ONNX export (`learning.policy.export`)."""

from __future__ import annotations

import json
from pathlib import Path

from learning.policy.base import PolicyInputError, VLAPolicy
from learning.policy.tokenizers import ActionTokenizer, InstructionError, WordTokenizer

__all__ = ["ActionTokenizer", "InstructionError", "PolicyInputError", "VLAPolicy", "WordTokenizer", "load_policy"]


def load_policy(path: str | Path, device: str | None = None):
    """Load a policy saved with ``save_pretrained`` (either kind), in eval mode."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"policy folder {p} does not exist (train one with `wvl sft`)")
    from learning.policy.hf_vla import ADAPTER_FILE

    if (p / ADAPTER_FILE).exists():
        from learning.policy.hf_vla import HFVLA

        policy = HFVLA.from_pretrained(p)
    else:
        cfg_path = p / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{p}: neither {ADAPTER_FILE} nor config.json; not a saved policy")
        name = json.loads(cfg_path.read_text()).get("_class_name")
        if name != "CompactVLA":
            raise ValueError(f"{cfg_path}: _class_name {name!r} is not a policy this build knows (CompactVLA, or an HF adapter folder)")
        from learning.policy.compact import CompactVLA

        policy = CompactVLA.from_pretrained(p)
    if device:
        policy.to(device)
    return policy.eval()
