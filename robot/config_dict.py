"""One way to build a config dataclass from a plain dict (YAML, JSON, a manifest): unknown keys are refused by name,
and a list (any sequence but a string) given for a field declared as a tuple becomes a tuple (YAML and JSON have no tuples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], d: dict[str, Any] | None, what: str) -> T:
    """``cls(**d)``, after refusing keys ``cls`` does not have (``what`` names the config in the error)."""
    d = dict(d or {})
    declared = {f.name: str(f.type) for f in fields(cls)}
    unknown = set(d) - set(declared)
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}; valid keys: {sorted(declared)}")
    for k, v in d.items():
        if isinstance(v, Sequence) and not isinstance(v, (str, bytes)) and "tuple" in declared[k].lower():
            d[k] = tuple(v)
    return cls(**d)
