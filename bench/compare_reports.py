"""Are two `wvl loop` reports the same in their numbers? (A refactor must not change them: same seeds, same results.)

    .venv/bin/python bench/compare_reports.py <before>/report.json <after>/report.json

Compares every number and string of the two report.json files but wall times, timestamps and the run's own paths
(out, cache and the folders under them); prints each difference. Last line: differences=<n> compared=<n>.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TIMING = {"seconds", "started", "finished", "notes"}  # wall times, timestamps, and notes that quote them


def _strip(x: Any, roots: tuple[str, ...]) -> Any:
    if isinstance(x, dict):
        return {k: _strip(v, roots) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [_strip(v, roots) for v in x]
    if isinstance(x, str):
        for i, root in enumerate(roots):
            x = x.replace(root, f"<root{i}>")
    return x


def _roots(report: dict) -> tuple[str, ...]:
    cfg = report.get("config", {})
    return tuple(str(cfg[k]) for k in ("out", "cache") if cfg.get(k))


def diff(a: Any, b: Any, path: str = "") -> tuple[list[str], int]:
    if type(a) is not type(b):
        return [f"{path}: {a!r} != {b!r}"], 1
    if isinstance(a, dict):
        out, n = [], 0
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'after' if k in b else 'before'}")
                n += 1
                continue
            o, m = diff(a[k], b[k], f"{path}/{k}")
            out, n = out + o, n + m
        return out, n
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"], 1
        out, n = [], 0
        for i, (u, v) in enumerate(zip(a, b)):
            o, m = diff(u, v, f"{path}[{i}]")
            out, n = out + o, n + m
        return out, n
    return ([] if a == b else [f"{path}: {a!r} != {b!r}"]), 1


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    before, after = (json.loads(Path(p).read_text()) for p in sys.argv[1:])
    differences, compared = diff(_strip(before, _roots(before)), _strip(after, _roots(after)))
    for line in differences:
        print(line)
    print(f"differences={len(differences)} compared={compared}")


if __name__ == "__main__":
    main()
