"""Where in a frame the mouth was repainted: the mask's repaint area carried back from aligned-face space.

The alignment matrix of a frame maps frame pixels to the aligned crop (`harness.pipeline.align.crop_size`,
420 x 560 at 512, as in the reference); the crop is then resized to resolution x resolution, where the mouth
mask lives. So the mask is resized to the crop and warped with the inverse of the matrix.
"""

from __future__ import annotations

import cv2
import numpy as np

from harness.pipeline.align import crop_size


class MouthRegions:
    """Per-frame boolean masks of the repaint area (and of a dilated copy) in frame coordinates."""

    def __init__(self, keep_mask: np.ndarray, resolution: int, dilate_px: int | None = None) -> None:
        if keep_mask.shape != (resolution, resolution):
            raise ValueError(f"mouth mask is {keep_mask.shape}, expected ({resolution}, {resolution})")
        box = crop_size(resolution)
        repaint = (keep_mask < 0.5).astype(np.uint8)
        # a margin: the mask's soft (resized) edge lets generated pixels reach a little past the repaint area
        grow = max(1, resolution // 32) if dilate_px is None else dilate_px
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        self._repaint = cv2.resize(repaint, box, interpolation=cv2.INTER_NEAREST)
        self._grown = cv2.resize(cv2.dilate(repaint, kernel), box, interpolation=cv2.INTER_NEAREST)

    @staticmethod
    def _to_frame(mask: np.ndarray, matrix: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        h, w = frame_hw
        warped = cv2.warpAffine(
            mask, np.asarray(matrix, dtype=np.float64), (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        )
        return warped.astype(bool)

    def mouth(self, matrix: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray | None:
        """The repaint area in the frame; None where the frame had no face (NaN matrix)."""
        if np.isnan(matrix).any():
            return None
        return self._to_frame(self._repaint, matrix, frame_hw)

    def outside(self, matrix: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        """Pixels that must be unchanged: all but the dilated repaint area (the whole frame without a face)."""
        if np.isnan(matrix).any():
            return np.ones(frame_hw, dtype=bool)
        return ~self._to_frame(self._grown, matrix, frame_hw)
