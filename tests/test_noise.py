"""Interleaved repeats and the noise verdict, on stand-in trial processes that time a sleep (a second or two).

Three trial processes share one input: the baseline sleeps 20 ms per repeat, `fast` 10 ms, and `noisy` a
different length each time (drawn at random once; fixed here so the test is repeatable). Their repeats must
run in rounds, one process at a time; `fast` must come out faster with its interval above 1, and `noisy` must
be marked not distinguishable in speed_ratios.json, the results table and the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.interleave import run_interleaved
from harness.noise import (
    NOT_DISTINGUISHABLE,
    ratio_interval,
    warn_if_busy,
    with_speed_ratios,
    write_speed_ratios,
)
from harness.results import collect_results

ROOT = Path(__file__).resolve().parents[1]
SLEEPS_MS = {"baseline": [20] * 5, "fast": [10] * 5, "noisy": [5, 60, 12, 45, 25]}

# One stand-in trial process: take a turn before each timed repeat (as harness.runner does), log when each slot
# began and ended, then leave the trial files a real trial leaves (result.json, config.json, timed_runs.json).
CHILD = """
import json, sys, time
from pathlib import Path
from harness.interleave import take_turn
from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic
name, folder, log = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
runs = []
for ms in json.loads(sys.argv[4]):
    take_turn()
    began = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"{name} {time.time()}\\n")
    time.sleep(ms / 1000)
    runs.append({"total_s": time.perf_counter() - began, "other_cpu_pct": 0.0})
    with open(log, "a") as f:
        f.write(f"{name} {time.time()}\\n")
write_json_atomic(folder / TIMED_RUNS_FILE, {"cold": runs[0], "runs": runs})
write_json_atomic(folder / "config.json", {"video": "clip.mp4", "audio": "clip.wav"})
TrialResult(trial=name, status="ok", metrics={"frames": 1.0, "fps": 1.0}).write(folder)
"""


def _child(name: str, sweep: Path, log: Path) -> int:
    folder = sweep / "trials" / f"{name}-0000"
    folder.mkdir(parents=True)
    args = [sys.executable, "-c", CHILD, name, str(folder), str(log), json.dumps(SLEEPS_MS[name])]
    return subprocess.run(args, cwd=ROOT, check=True).returncode


@pytest.fixture(scope="module")
def noisy_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep")
    log = sweep / "slots.log"
    jobs = [lambda name=name: _child(name, sweep, log) for name in SLEEPS_MS]
    assert run_interleaved(jobs) == [0, 0, 0]
    (sweep / "sweep.json").write_text(json.dumps({"name": "noise", "baseline": "baseline"}))
    write_speed_ratios(sweep, "baseline")
    return sweep


def test_repeats_run_in_rounds_one_process_at_a_time(noisy_sweep: Path) -> None:
    lines = [line.split() for line in (noisy_sweep / "slots.log").read_text().splitlines()]
    order = [name for name, _ in lines[::2]]
    assert order == ["baseline", "fast", "noisy"] * 5
    times = [float(t) for _, t in lines]
    assert times == sorted(times)  # every slot ended before the next began: no two ran at once


def test_a_noisy_trial_is_not_distinguishable_and_a_real_gain_is(noisy_sweep: Path) -> None:
    table = with_speed_ratios(collect_results(noisy_sweep), noisy_sweep).set_index("trial")
    assert table.loc["fast", "speed_verdict"] == "faster" and table.loc["fast", "speedup_x_low"] > 1.2
    assert table.loc["noisy", "speed_verdict"] == NOT_DISTINGUISHABLE
    assert table.loc["noisy", "speedup_x_low"] < 1.0 < table.loc["noisy", "speedup_x_high"]
    assert table.loc["baseline", "speed_verdict"] == "baseline"
    assert warn_if_busy(noisy_sweep) == []  # the stand-ins report an idle machine


def test_too_few_repeats_are_never_a_result() -> None:
    ratio = ratio_interval([10.0, 10.0], [20.0, 20.0])
    assert ratio.value == pytest.approx(2.0) and ratio.verdict == NOT_DISTINGUISHABLE
    assert "5 timed repeats needed" in ratio.reason and pd.isna(ratio.low)


def test_a_busy_machine_is_reported(tmp_path: Path) -> None:
    from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic

    folder = tmp_path / "trials" / "baseline-0000"
    runs = [{"total_s": 1.0, "other_cpu_pct": 55.0, "load_avg_1m": 3.9, "cpu_cores": 2.0}] * 5
    write_json_atomic(folder / TIMED_RUNS_FILE, {"cold": runs[0], "runs": runs})
    TrialResult(trial="baseline", status="ok", metrics={"frames": 10.0}).write(folder)
    write_speed_ratios(tmp_path, "baseline")
    [warning] = warn_if_busy(tmp_path)
    assert "other processes used 55% of the CPU" in warning and "load average 3.9 on 2 cores" in warning


def test_the_report_marks_the_noisy_trial_and_draws_real_images(noisy_sweep: Path) -> None:
    import cv2

    from reports.build import write_report

    text = write_report(noisy_sweep).read_text()
    noisy_row = next(line for line in text.splitlines() if line.startswith("| noisy |"))
    assert "not distinguishable" in noisy_row and "faster" in text
    pngs = sorted((noisy_sweep / "report").glob("*.png"))
    assert {"speed_ratios.png", "fps.png"} <= {p.name for p in pngs}
    for png in pngs:
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 100 and image.std() > 0  # a real, non-blank image
        assert f"({png.name})" in text  # and the report shows it
