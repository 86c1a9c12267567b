"""The functions that took the most cumulative time (cProfile's `profile.prof`), two trials side by side."""

from __future__ import annotations

import pstats
from pathlib import Path


def top_functions(profile: str | Path, count: int = 15) -> list[tuple[str, float]]:
    """(function, cumulative seconds) of the `count` largest, as `name (file:line)` with the file's name only."""
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    ranked = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[:count]
    return [
        (f"{func} ({Path(file).name}:{line})", cumulative)
        for (file, line, func), (*_, cumulative, _) in ranked
    ]


def side_by_side(left: tuple[str, Path], right: tuple[str, Path], count: int = 15) -> str:
    """A Markdown table: rank, then each trial's function and cumulative seconds."""
    a, b = top_functions(left[1], count), top_functions(right[1], count)
    lines = [
        f"| # | {left[0]}: function | s | {right[0]}: function | s |",
        "| ---: | --- | ---: | --- | ---: |",
    ]
    for i in range(max(len(a), len(b))):
        cells = [f"`{row[0]}` | {row[1]:.3f}" if row else " | " for row in (_at(a, i), _at(b, i))]
        lines.append(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _at(rows: list[tuple[str, float]], i: int) -> tuple[str, float] | None:
    return rows[i] if i < len(rows) else None
