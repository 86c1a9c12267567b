"""The Pareto front of speed against one quality score: the trials no other trial beats on both."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(
    speed: Sequence[float], quality: Sequence[float], higher_is_better: bool = True
) -> list[bool]:
    """For each trial, whether it is on the front (higher speed is better; quality as told). NaN is never on it."""
    sign = 1.0 if higher_is_better else -1.0
    points = [(s, sign * q) for s, q in zip(speed, quality, strict=True)]

    def valid(p: tuple[float, float]) -> bool:
        return p[0] == p[0] and p[1] == p[1]  # not NaN

    def beaten(p: tuple[float, float]) -> bool:
        return any(valid(o) and o[0] >= p[0] and o[1] >= p[1] and o != p for o in points)

    return [valid(p) and not beaten(p) for p in points]
