"""A frame strip around the mouth: the same moment of the input, the baseline's output and chosen trials' outputs.

Every panel is cut from its frame with the baseline's alignment of that frame (`matrices.npy`: frame -> aligned
face), so the panels line up pixel for pixel; the cut is the aligned face from the top of the repainted region
(harness.pipeline.mask.TOP) down, i.e. the mouth and chin the U-Net redraws.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from harness.pipeline.mask import DESIGN_SIZE, TOP
from harness.results import MATRICES_FILE
from reports.plots import new_figure, save_png


def _frame(video: str | Path, index: int) -> np.ndarray:
    from harness.pipeline.media import iter_frames

    frame = next(itertools.islice(iter_frames(video), index, None), None)
    if frame is None:
        raise ValueError(f"{video} has no frame {index}")
    return frame


def mouth_crop(frame: np.ndarray, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """The lower face of `frame` as the pipeline aligns it: rows from the repainted region's top, full width."""
    from harness.pipeline.align import warp_faces

    face = warp_faces(frame[None], matrix[None], resolution)[0]
    return face[int(TOP / DESIGN_SIZE * resolution) :]


def frame_strip(
    input_video: str | Path,
    baseline_folder: Path,
    panels: list[tuple[str, Path]],
    resolution: int,
    path: Path,
) -> Path:
    """Draw the strip: the input, then each (title, output video) in `panels`, at the clip's middle frame."""
    matrices = np.load(baseline_folder / MATRICES_FILE)
    index = len(matrices) // 2
    crops = [("input", mouth_crop(_frame(input_video, index), matrices[index], resolution))]
    crops += [
        (title, mouth_crop(_frame(video, index), matrices[index], resolution)) for title, video in panels
    ]
    height, width = crops[0][1].shape[:2]
    figure = new_figure(2.2 * len(crops), 2.2 * height / width + 0.5)
    for i, (title, crop) in enumerate(crops):
        ax = figure.add_subplot(1, len(crops), i + 1)
        ax.imshow(crop)
        ax.set_title(title, fontsize="small")
        ax.axis("off")
    figure.suptitle(f"around the mouth, frame {index}", fontsize="small")
    return save_png(figure, path)
