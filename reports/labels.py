"""Point labels that do not overlap one another or the points, however many trials a plot holds.

Each label tries positions on rings around its point (nearest first, eight directions each) and takes the first
whose box, measured by the renderer, overlaps no label placed before it, no point and stays inside the axes; a
label set away from its point gets a thin leader line. The figure's layout is fixed first, so the boxes measured
here are the ones saved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

RINGS_PT = (6, 16, 28, 42, 58, 76, 96, 120)
DIRECTIONS = 8
POINT_RADIUS_PX = 5.0


def _overlaps(box: Bbox, others: Sequence[Bbox]) -> int:
    return sum(box.overlaps(other) for other in others)


def _candidates() -> list[tuple[float, float]]:
    out = []
    for ring in RINGS_PT:
        for k in range(DIRECTIONS):
            angle = math.pi / 4 * k
            out.append((ring * math.cos(angle), ring * math.sin(angle)))
    return out


def _annotate(
    ax: Axes, name: str, xy: tuple[float, float], offset: tuple[float, float], leader: bool
) -> Annotation:
    dx, dy = offset
    return ax.annotate(
        name,
        xy,
        xytext=offset,
        textcoords="offset points",
        fontsize="small",
        ha="left" if dx >= 0 else "right",
        va="bottom" if dy >= 0 else "top",
        arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.6} if leader else None,
    )


def place_labels(
    ax: Axes, xs: Sequence[float], ys: Sequence[float], names: Sequence[str]
) -> list[Annotation]:
    """Annotate each (x, y) with its name where it collides with nothing (see the module doc)."""
    from matplotlib.transforms import Bbox

    figure = ax.figure
    figure.canvas.draw()  # runs the layout engine: axes positions are final from here on
    figure.set_layout_engine("none")
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = POINT_RADIUS_PX
    occupied = [
        Bbox.from_bounds(cx - r, cy - r, 2 * r, 2 * r)
        for cx, cy in (ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True))
    ]
    placed: list[Annotation] = []
    for x, y, name in zip(xs, ys, names, strict=True):
        best: tuple[int, tuple[float, float], Bbox] | None = None
        for offset in _candidates():
            trial = _annotate(ax, name, (x, y), offset, leader=False)
            box = trial.get_window_extent(renderer)
            trial.remove()
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            score = _overlaps(box, occupied) + (0 if inside else 1)
            if best is None or score < best[0]:
                best = (score, offset, box)
            if score == 0:
                break
        assert best is not None
        _, offset, box = best
        placed.append(_annotate(ax, name, (x, y), offset, leader=math.hypot(*offset) > RINGS_PT[0]))
        occupied.append(box)
    return placed
