"""Trial files round-trip, repeats summarise as documented, and the sweep table has one row per trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.results import (
    ResultsError,
    TrialResult,
    collect_results,
    load_trial,
    summarise_repeats,
    write_json_atomic,
    write_table,
)


def test_write_json_atomic_round_trips_numpy_and_paths(tmp_path: Path) -> None:
    path = write_json_atomic(
        tmp_path / "deep" / "x.json", {"a": np.float32(1.5), "p": Path("/x"), "v": np.arange(3)}
    )
    assert json.loads(path.read_text()) == {"a": 1.5, "p": "/x", "v": [0, 1, 2]}


def test_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "result.json", {"status": "ok"})
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        write_json_atomic(path, {"status": object()})
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_trial_result_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    result = TrialResult(
        trial="steps=10",
        status="ok",
        key="abc123",
        variants={"steps": 10},
        params={"config.steps": 10},
        tags={"weights.synthetic": "true"},
        metrics={"denoise_s": 1.25, "fps": 3.0},
        artifacts=["profile_top30.txt"],
        wall_s=4.0,
        extra={"skipped_scores": {"fid": "no reference"}},
    )
    write_json_atomic(tmp_path / "config.json", {"steps": 10})
    result.write(tmp_path)
    record = load_trial(tmp_path)
    assert record.result == result
    assert record.config == {"steps": 10}
    assert json.loads((tmp_path / "result.json").read_text())["skipped_scores"] == {"fid": "no reference"}
    assert record.artifact_files() == []  # listed but absent: left out
    (tmp_path / "profile_top30.txt").write_text("table")
    assert record.artifact_files() == [tmp_path / "profile_top30.txt"]


def test_bad_result_files_name_the_file_and_the_fault(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no result.json"):
        load_trial(tmp_path)
    write_json_atomic(tmp_path / "result.json", {"trial": "t", "status": "done"})
    with pytest.raises(ResultsError, match=r"result\.json: .*status must be one of ok, failed, skipped"):
        load_trial(tmp_path)
    write_json_atomic(tmp_path / "result.json", {"trial": "t", "status": "ok", "metrics": [1]})
    with pytest.raises(ResultsError, match="'metrics' must be a dict"):
        load_trial(tmp_path)
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_trial(tmp_path)


def test_summarise_repeats_median_spread_peaks_and_cold() -> None:
    runs = [
        {"denoise_s": 3.0, "peak_rss_mb": 900.0, "frames": 50},
        {"denoise_s": 1.0, "peak_rss_mb": 1000.0, "frames": 50},
        {"denoise_s": 2.0, "peak_rss_mb": 950.0, "frames": 50, "decode_s": 0.5},
        {"denoise_s": 4.0, "peak_rss_mb": 920.0, "frames": 50},
    ]
    out = summarise_repeats(runs, cold={"denoise_s": 9.0})
    assert out["denoise_s"] == pytest.approx(2.5)
    assert out["denoise_s_iqr"] == pytest.approx(3.25 - 1.75)  # linear-interpolated quartiles of 1, 2, 3, 4
    assert (out["denoise_s_min"], out["denoise_s_max"]) == (1.0, 4.0)
    assert out["peak_rss_mb"] == 1000.0  # the largest peak, not a median
    assert out["frames"] == 50 and "frames_iqr" not in out
    assert out["decode_s"] == 0.5 and out["decode_s_iqr"] == 0.0  # only the run that has it
    assert out["cold_denoise_s"] == 9.0 and out["repeats"] == 4
    with pytest.raises(ValueError, match="at least one timed run"):
        summarise_repeats([])


def _trial(sweep: Path, name: str, **fields) -> Path:
    folder = sweep / "trials" / f"{name}-0000"
    TrialResult(trial=name, **fields).write(folder)
    return folder


def test_collect_results_one_row_per_trial_and_readable_tables(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _trial(
        sweep,
        "baseline",
        status="ok",
        key="k1",
        params={"config.steps": 20, "config.extras.cache": "none"},
        metrics={"denoise_s": 2.0, "fps": 12.5, "peak_rss_mb": 800.0},
        tags={"weights.synthetic": "true"},
    )
    _trial(
        sweep,
        "deepcache",
        status="ok",
        key="k2",
        variants={"deepcache": {"interval": 3}},
        params={"config.steps": 20, "config.extras.cache": 3},  # a column of mixed types
        metrics={"denoise_s": 1.0, "fps": 20.0},
    )
    _trial(sweep, "fp16", status="skipped", key="k3", reason="fp16 needs a GPU")
    _trial(sweep, "broken", status="failed", key="k4", error="RuntimeError: out of memory\n  more lines")
    (sweep / "trials" / "unreadable-0000").mkdir()
    (sweep / "trials" / "unreadable-0000" / "result.json").write_text("{")
    (sweep / "trials" / "running-0000").mkdir()  # no result.json yet: not a row

    df = collect_results(sweep)
    assert sorted(df["trial"]) == ["baseline", "broken", "deepcache", "fp16", "unreadable-0000"]
    rows = df.set_index("trial")
    assert rows.loc["deepcache", "denoise_s"] == 1.0 and rows.loc["baseline", "fps"] == 12.5
    assert rows.loc["fp16", "status"] == "skipped" and rows.loc["fp16", "reason"] == "fp16 needs a GPU"
    assert rows.loc["broken", "error"] == "RuntimeError: out of memory"
    assert (
        rows.loc["unreadable-0000", "status"] == "failed"
        and "not valid JSON" in rows.loc["unreadable-0000", "error"]
    )
    assert json.loads(rows.loc["deepcache", "variants"]) == {"deepcache": {"interval": 3}}

    csv_path, parquet_path = write_table(df, sweep)
    for table in (pd.read_csv(csv_path), pd.read_parquet(parquet_path)):
        assert len(table) == 5 and table["trial"].is_unique
        assert table.set_index("trial").loc["baseline", "denoise_s"] == 2.0
        assert str(table.set_index("trial").loc["deepcache", "config.extras.cache"]) == "3"
    assert not [p for p in sweep.iterdir() if p.name.endswith(".tmp")]


def test_collect_results_names_a_folder_that_is_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no trials/ folder"):
        collect_results(tmp_path)


def test_compile_time_is_the_cold_runs_extra_time_in_the_compiled_models_stages_only():
    from harness.runner import compile_seconds

    # a cold run 40 s longer: 1.5 s of first reads and 3 s of detector warm-up, the rest compiling in the
    # encode, denoise and decode stages; a stage faster cold than warm counts as 0, not below
    metrics = {"read_s": 0.5, "cold_read_s": 2.0, "detect_s": 1.0, "cold_detect_s": 4.0, "encode_s": 1.0,
               "cold_encode_s": 6.0, "denoise_s": 10.0, "cold_denoise_s": 40.0, "decode_s": 2.0, "cold_decode_s": 1.5,
               "total_s": 14.5, "cold_total_s": 53.5}
    assert compile_seconds(metrics) == 35.0
