"""Success rates with honest error bars.

``wilson_interval``: the Wilson score interval for a binomial proportion -- unlike the normal ("Wald")
interval it stays inside [0, 1] and keeps close to its nominal coverage at small n and at rates near 0 or 1
(30 real trials at 13% is exactly that regime). ``newcombe_difference``: the interval of a difference of two
independent rates (Newcombe's method 10, built from the two Wilson intervals), for "did the loop improve the
policy?". Pure Python: the loop, the policy evaluation and the world-model alignment metrics all use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n or int(successes) != successes or int(n) != n:
        raise ValueError(f"successes/n: need integers 0 <= successes <= n, got {successes}/{n}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval; (0, 1) when n == 0 (nothing is known)."""
    _check(successes, n)
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact at the edges (rounding would otherwise leave 1e-17 instead of 0).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference p2 - p1 of two independent rates with its interval: (difference, low, high)."""
    _check(s1, n1)
    _check(s2, n2)
    if n1 == 0 or n2 == 0:
        raise ValueError("n1/n2: both samples need at least one trial")
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, confidence)
    l2, u2 = wilson_interval(s2, n2, confidence)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, low, high


@dataclass(frozen=True)
class SuccessRate:
    successes: int
    n: int
    confidence: float = 0.95

    def __post_init__(self) -> None:
        _check(self.successes, self.n)

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n, self.confidence)

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.rate:.1%} [{lo:.1%}, {hi:.1%}] ({self.successes}/{self.n}, {self.confidence:.0%} Wilson CI)"

    def to_dict(self) -> dict[str, float]:
        lo, hi = self.interval
        return {"successes": self.successes, "n": self.n, "rate": self.rate, "ci_low": lo, "ci_high": hi, "confidence": self.confidence}
