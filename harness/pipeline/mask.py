"""The fixed mouth mask of the aligned face: 1 keeps the reference pixels, 0 is repainted by the U-Net.

The repainted region is drawn procedurally on a 256 x 256 design grid: a band from the nostrils down
(rows 95 up) whose sides curve into a rounded chin, with a rectangular notch left out above the upper lip.
Each side of the chin is a superellipse quarter, x = cx -/+ a * (1 - ((y - cy) / b) ** q) ** (1 / p), fitted
to the outline of the upstream LatentSync mask (the lower face is slightly asymmetric, so the two sides have
their own parameters). Other resolutions scale the same shape; edge pixels get their area coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DESIGN_SIZE = 256.0
TOP = 95.0  # first repainted row
NOTCH = (78.0, 178.0, 128.0)  # x0, x1, y1 of the kept rectangle above the upper lip
CHIN_X = 141.1  # where the two sides meet, below the chin


@dataclass(frozen=True)
class _Side:
    """One side of the chin: half-width a at rows above cy, falling to zero at cy + b."""

    a: float
    cy: float
    b: float
    p: float
    q: float

    def half_width(self, y: np.ndarray) -> np.ndarray:
        t = np.clip((y - self.cy) / self.b, 0.0, 1.0)
        return self.a * (1.0 - t**self.q) ** (1.0 / self.p)


LEFT = _Side(a=132.1, cy=129.7, b=113.8, p=1.87, q=2.52)
RIGHT = _Side(a=105.9, cy=130.9, b=113.5, p=1.45, q=2.56)


def mouth_mask(resolution: int, supersample: int = 4) -> np.ndarray:
    """(resolution, resolution) float32 in [0, 1]: 1 = keep, 0 = repaint; edges anti-aliased by coverage."""
    if resolution < 8:
        raise ValueError(f"mouth_mask: resolution must be at least 8 pixels, got {resolution}")
    n = resolution * supersample
    s = (np.arange(n) + 0.5) * (DESIGN_SIZE / n)  # sample centres in design units
    y, x = s[:, None], s[None, :]
    inside = (y >= TOP) & (x >= CHIN_X - LEFT.half_width(y)) & (x < CHIN_X + RIGHT.half_width(y))
    x0, x1, y1 = NOTCH
    notch = (y < y1) & (x >= x0) & (x < x1)
    repaint = (inside & ~notch).reshape(resolution, supersample, resolution, supersample).mean(axis=(1, 3))
    return (1.0 - repaint).astype(np.float32)
