import cv2
import numpy as np
import pandas as pd
import pytest

from harness.stages import STAGES
from reports.plots import draw_if_available, stage_times_plot, sweep_plots


def _png(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return image


def test_stage_times_plot_draws_one_bar_pair_per_stage(tmp_path):
    metrics = {"detect_s": 1.0, "cold_detect_s": 2.0, "denoise_s": 5.0, "total_s": 6.0, "fps": 8.0}
    few = _png(stage_times_plot(metrics, STAGES, tmp_path / "a.png"))
    many = _png(
        stage_times_plot({**metrics, **{f"{s}_s": 0.5 for s in STAGES}}, STAGES, tmp_path / "b.png")
    )
    assert many.shape[0] > few.shape[0]  # the figure grows with the number of stages
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left
    with pytest.raises(ValueError, match="no stage times"):
        stage_times_plot({"fps": 1.0}, STAGES, tmp_path / "c.png")


def test_sweep_plots_draw_ok_trials_and_quality_only_when_scored(tmp_path):
    table = pd.DataFrame(
        {
            "trial": ["baseline", "fast", "broken"],
            "status": ["ok", "ok", "failed"],
            "fps": [2.0, 4.0, np.nan],
            "denoise_s": [3.0, 1.0, np.nan],
            "decode_s": [0.5, 0.5, np.nan],
        }
    )
    paths = sweep_plots(table, tmp_path / "speed", STAGES, baseline="baseline")
    assert [p.name for p in paths] == ["fps.png", "stage_times.png"]
    fps = _png(paths[0])
    red = (fps[:, :, 2] > 180) & (fps[:, :, 1] < 80) & (fps[:, :, 0] < 80)
    assert red.any()  # the baseline's bar stands out

    table["psnr_db"] = [np.nan, 31.5, np.nan]
    paths = sweep_plots(table, tmp_path / "quality", STAGES, baseline="baseline")
    assert [p.name for p in paths][-1] == "speed_vs_quality.png"
    assert sweep_plots(table[table["status"] == "failed"], tmp_path / "none", STAGES) == []


def test_plots_are_skipped_with_a_warning_without_matplotlib(caplog):
    def draw() -> None:
        raise ImportError("No module named 'matplotlib'")

    assert draw_if_available(draw) is False
    assert "no plot drawn" in caplog.text
