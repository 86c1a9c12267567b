"""Interleaved repeats and the noise verdict, on stand-in trial processes that time a sleep (a second or two).

A stand-in speaks the trial process's side of harness.interleave as harness.runner does (start-up, claim the
floor, a cold run, then a timed repeat per turn), logs when each phase began and ended, and leaves the trial
files a real trial leaves (result.json, config.json, timed_runs.json with the rounds). In the first sweep the
baseline sleeps 20 ms per repeat, `fast` 10 ms and `noisy` a different length each time (drawn at random once;
fixed here so the test is repeatable): `fast` must come out faster with its interval above 1 and `noisy` not
distinguishable, from paired rounds. Then the schedule itself: at most as many processes alive as asked or as
the (fake) device's memory allows, the baseline timed in every round, and start-ups never beside a timed repeat.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from harness.interleave import Job, run_interleaved
from harness.noise import (
    COMPILED_WHILE_TIMED,
    NOT_DISTINGUISHABLE,
    TOO_FEW,
    paired_ratio,
    ratio_interval,
    warn_if_busy,
    with_speed_ratios,
    write_speed_ratios,
)
from harness.results import collect_results

ROOT = Path(__file__).resolve().parents[1]
SLEEPS_MS = {"baseline": [20], "fast": [10] * 5, "noisy": [5, 60, 12, 45, 25]}

# One stand-in trial process. Its "device" is a JSON file of what each live stand-in holds, so the memory it
# reports at each park (held and free MB) follows the processes alive, as a GPU's would.
CHILD = """
import json, os, sys, time
from pathlib import Path
from harness.turns import claim_floor, turns
from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic
spec = json.loads(sys.argv[1])
folder, name = Path(spec["folder"]), spec["name"]
device = Path(spec["device"])

def log(event):
    with open(spec["log"], "a") as f:
        f.write(f"{name} {event} {time.time()}\\n")

def hold(mb):
    holding = json.loads(device.read_text()) if device.exists() else {}
    holding[name] = mb
    write_json_atomic(device, holding)

def memory():
    used = sum(json.loads(device.read_text()).values())
    return {"held_mb": spec["held_mb"], "free_mb": spec["total_mb"] - used, "total_mb": spec["total_mb"]}

log("start")
time.sleep(spec["startup_s"])
hold(spec["held_mb"])
log("ready")
claim_floor(folder)
log("warm")
time.sleep(spec["warm_s"])
log("warmed")
runs, rounds = [], []
for i, round_id in enumerate(turns(spec["repeats"], folder, memory)):
    began = time.perf_counter()
    log("timed")
    time.sleep(spec["sleeps_ms"][i % len(spec["sleeps_ms"])] / 1000)
    runs.append({"total_s": time.perf_counter() - began, "other_cpu_pct": 0.0})
    rounds.append(round_id)
    log("untimed")
write_json_atomic(folder / TIMED_RUNS_FILE, {"cold": runs[0], "runs": runs, "rounds": rounds})
write_json_atomic(folder / "config.json", {"video": "clip.mp4", "audio": "clip.wav"})
TrialResult(trial=name, status="ok", metrics={"frames": 1.0, "fps": 1.0}).write(folder)
hold(0)
log("end")
"""


def _child(spec: dict) -> int:
    # the moment the coordinator starts the process, not the moment its interpreter gets to log: on a busy
    # machine a stand-in's own start outlasts the others' short phases
    with open(spec["log"], "a") as f:
        f.write(f"{spec['name']} launch {time.time()}\n")
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, check=True).returncode


def _jobs(sweep: Path, sleeps: dict[str, list[int]], **spec) -> list[Job]:
    jobs = []
    for name, ms in sleeps.items():
        folder = sweep / "trials" / f"{name}-0000"
        folder.mkdir(parents=True)
        child = {
            "name": name,
            "folder": str(folder),
            "log": str(sweep / "phases.log"),
            "device": str(sweep / "device.json"),
            "sleeps_ms": ms,
            "repeats": 5,
            "startup_s": 0.0,
            "warm_s": 0.0,
            "held_mb": 100,
            "total_mb": 10**6,
            **spec,
        }
        jobs.append(Job(partial(_child, child), folder, name, 5, baseline=name == "baseline"))
    return jobs


def _phases(sweep: Path) -> list[tuple[str, str, float]]:
    lines = (sweep / "phases.log").read_text().split("\n")
    return sorted(
        ((n, e, float(t)) for n, e, t in (line.split() for line in lines if line)), key=lambda x: x[2]
    )


def _spans(phases: list, begin: str, end: str) -> list[tuple[str, float, float]]:
    """(process, begin, end) of every phase from `begin` to the next `end` of the same process."""
    spans, open_at = [], {}
    for name, event, at in phases:
        if event == begin:
            open_at[name] = at
        elif event == end and name in open_at:
            spans.append((name, open_at.pop(name), at))
    return spans


def _overlapping(a: list, b: list) -> list:
    return [(x, y) for x in a for y in b if x[0] != y[0] and x[1] < y[2] and y[1] < x[2]]


@pytest.fixture(scope="module")
def noisy_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    sweep = tmp_path_factory.mktemp("sweep")
    rounds = run_interleaved(_jobs(sweep, SLEEPS_MS), seed=7)
    assert rounds.results == [0, 0, 0]
    (sweep / "sweep.json").write_text(json.dumps({"name": "noise", "baseline": "baseline"}))
    write_speed_ratios(sweep, "baseline")
    return sweep, rounds.record


def test_repeats_run_in_shuffled_rounds_beside_the_baseline_one_process_at_a_time(noisy_sweep) -> None:
    sweep, record = noisy_sweep
    phases = _phases(sweep)
    order = [name for name, event, _ in phases if event == "timed"]
    assert len(order) == 15 and record["seed"] == 7
    assert [sorted(order[i : i + 3]) for i in range(0, 15, 3)] == [["baseline", "fast", "noisy"]] * 5
    assert [order[i : i + 3] for i in range(0, 15, 3)] == record[
        "rounds"
    ]  # the recorded orders are the real ones
    assert len({tuple(r) for r in record["rounds"]}) > 1  # shuffled, not always the same order
    busy = _spans(phases, "timed", "untimed") + _spans(phases, "warm", "warmed")
    assert not _overlapping(busy, busy)  # no two processes worked at once
    timed = json.loads(next((sweep / "trials").glob("fast-*/timed_runs.json")).read_text())
    assert timed["rounds"] == [f"00000007-{i}" for i in range(1, 6)]


def test_a_noisy_trial_is_not_distinguishable_and_a_real_gain_is(noisy_sweep) -> None:
    sweep, _ = noisy_sweep
    table = with_speed_ratios(collect_results(sweep), sweep).set_index("trial")
    assert table.loc["fast", "speed_verdict"] == "faster" and table.loc["fast", "speedup_x_low"] > 1.2
    assert table.loc["fast", "speed_paired"] == "true"
    assert table.loc["noisy", "speed_verdict"] == NOT_DISTINGUISHABLE
    assert table.loc["noisy", "speedup_x_low"] < 1.0 < table.loc["noisy", "speedup_x_high"]
    assert table.loc["baseline", "speed_verdict"] == "baseline"
    assert warn_if_busy(sweep) == []  # the stand-ins report an idle machine


def test_too_few_repeats_are_a_verdict_of_their_own() -> None:
    for ratio in (ratio_interval([10.0] * 5, [20.0, 20.0]), paired_ratio([10.0] * 4, [20.0] * 4)):
        assert ratio.value == pytest.approx(2.0) and ratio.verdict == TOO_FEW and pd.isna(ratio.low)
    assert "5 timed repeats needed on each side, 2 measured" in ratio_interval([1.0] * 5, [1.0] * 2).reason
    assert "5 paired rounds needed, 4 measured" in paired_ratio([1.0] * 4, [1.0] * 4).reason


def test_pairing_cancels_a_drift_the_unpaired_ratio_cannot_see_through() -> None:
    # a machine slowing round by round, the trial 10% faster than the baseline in every round
    baseline = [10.0, 8.0, 12.0, 7.0, 11.0]
    trial = [1.1 * fps for fps in baseline]
    assert paired_ratio(baseline, trial).verdict == "faster"
    assert ratio_interval(baseline, trial).verdict == NOT_DISTINGUISHABLE


def test_at_most_max_processes_are_alive_and_the_baseline_is_timed_beside_every_trial(tmp_path: Path) -> None:
    sleeps = {name: [1] for name in ("baseline", "a", "b", "c")}
    rounds = run_interleaved(_jobs(tmp_path, sleeps), max_processes=2)
    assert rounds.results == [0] * 4
    _check_schedule(tmp_path, rounds.record, most_alive=2)


def test_no_more_processes_are_alive_than_the_devices_memory_holds(tmp_path: Path) -> None:
    # 1000 MB each on a 3500 MB device: after the baseline, one trial fits (1.2 x 1000 with 10% kept free)
    sleeps = {name: [1] for name in ("baseline", "a", "b", "c")}
    rounds = run_interleaved(_jobs(tmp_path, sleeps, held_mb=1000, total_mb=3500))
    _check_schedule(tmp_path, rounds.record, most_alive=2)
    assert rounds.record["largest_process_mb"] == 1000


def _check_schedule(sweep: Path, record: dict, most_alive: int) -> None:
    lives = _spans(_phases(sweep), "launch", "end")
    assert max(sum(b <= at < e for _, b, e in lives) for _, at, _ in lives) == most_alive
    baseline = json.loads(next((sweep / "trials").glob("baseline-*/timed_runs.json")).read_text())["rounds"]
    for name in ("a", "b", "c"):
        trial = json.loads(next((sweep / "trials").glob(f"{name}-*/timed_runs.json")).read_text())["rounds"]
        assert len(trial) == 5 and set(trial) <= set(baseline)  # each repeat has the baseline's beside it
    assert len(baseline) == len(record["rounds"]) == 15  # one baseline repeat per round, trials one by one


@pytest.mark.parametrize("overlap", [True, False])
def test_a_start_up_never_runs_beside_a_timed_repeat(tmp_path: Path, overlap: bool) -> None:
    sleeps = {"baseline": [20], "a": [20], "b": [20]}
    run_interleaved(_jobs(tmp_path, sleeps, startup_s=0.4, warm_s=0.4), overlap_startup=overlap)
    phases = _phases(tmp_path)
    startups = _spans(phases, "launch", "ready")
    assert not _overlapping(startups, _spans(phases, "timed", "untimed"))
    beside_warm_ups = _overlapping(startups, _spans(phases, "warm", "warmed"))
    assert bool(beside_warm_ups) == overlap  # with overlap_startup, the next one starts up during a cold run


def test_a_busy_machine_is_reported_and_a_power_capped_gpu_apart(tmp_path: Path) -> None:
    from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic
    from reports.build import write_report

    busy = {"total_s": 1.0, "other_cpu_pct": 55.0, "load_avg_1m": 3.9, "cpu_cores": 2.0}
    capped = {"total_s": 1.0, "gpu_throttled": 1.0, "gpu_slowed_pct": 90.0, "gpu_sm_clock_mhz": 1620.0,
              "gpu_sm_clock_max_mhz": 1980.0, "gpu_slowdown_reasons": 0x4}  # as on the H200, 2026-12-03
    for name, run in (("baseline", busy), ("compile", capped)):
        folder = tmp_path / "trials" / f"{name}-0000"
        write_json_atomic(folder / TIMED_RUNS_FILE, {"cold": run, "runs": [run] * 5})
        TrialResult(trial=name, status="ok", metrics={"frames": 10.0, "fps": 10.0}).write(folder)
        (folder / "config.json").write_text(json.dumps({"device": "cuda"}))
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "load", "baseline": "baseline"}))
    ratios = json.loads(write_speed_ratios(tmp_path, "baseline").read_text())
    [warning] = warn_if_busy(tmp_path)  # the baseline's: other processes; the power cap is no warning
    assert "baseline" in warning and "other processes used 55% of the CPU" in warning
    assert "load average 3.9 on 2 cores" in warning
    assert ratios["compile"]["machine_busy"] == "false"
    assert "1620 of 1980 MHz: power cap" in ratios["compile"]["gpu_power_limited"]
    text = write_report(tmp_path).read_text()
    assert "**The machine was busy** while 1 trial(s)" in text and "**GPU at its power limit** while 1" in text


def test_the_report_marks_the_noisy_trial_and_draws_real_images(noisy_sweep) -> None:
    import cv2

    from reports.build import write_report

    sweep, _ = noisy_sweep
    text = write_report(sweep).read_text()
    noisy_row = next(line for line in text.splitlines() if line.startswith("| noisy |"))
    assert "not distinguishable" in noisy_row and "faster" in text
    pngs = sorted((sweep / "report").glob("*.png"))
    assert {"speed_ratios.png", "fps.png"} <= {p.name for p in pngs}
    for png in pngs:
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 100 and image.std() > 0  # a real, non-blank image
        assert f"({png.name})" in text  # and the report shows it


def test_a_trial_that_compiled_while_timed_gets_no_speed_verdict(tmp_path: Path) -> None:
    """A repeat whose run built a torch.compile graph timed compiling too: no ratio, whichever side it was on."""
    from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic
    from reports.build import write_report

    def run(fps: float, graphs: float = 0.0) -> dict:
        return {"total_s": 10.0 / fps, "graphs_compiled": graphs}

    repeats = {
        "baseline": [run(5.0)] * 5,
        "packed-flex": [run(8.0, graphs=1.0)] + [run(8.0)] * 4,  # its first repeat recompiled
        "packed": [run(8.0)] * 5,
    }
    for name, runs in repeats.items():
        folder = tmp_path / "trials" / f"{name}-0000"
        write_json_atomic(folder / TIMED_RUNS_FILE, {"cold": runs[0], "runs": runs})
        TrialResult(trial=name, status="ok", metrics={"frames": 10.0, "fps": 8.0}).write(folder)
        (folder / "config.json").write_text(json.dumps({"device": "cuda"}))
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "recompile", "baseline": "baseline"}))
    ratios = json.loads(write_speed_ratios(tmp_path, "baseline").read_text())
    assert ratios["packed"]["speed_verdict"] == "faster"
    flex = ratios["packed-flex"]
    assert flex["speed_verdict"] == COMPILED_WHILE_TIMED and "speedup_x" not in flex
    assert flex["speed_verdict_reason"].startswith("1 timed repeat(s) of packed-flex built torch.compile graphs")
    row = next(line for line in write_report(tmp_path).read_text().splitlines() if line.startswith("| packed-flex |"))
    assert COMPILED_WHILE_TIMED in row
    # the baseline's recompile spoils every comparison with it
    timed = tmp_path / "trials" / "baseline-0000" / TIMED_RUNS_FILE
    write_json_atomic(timed, {"cold": run(5.0), "runs": [run(5.0, graphs=2.0)] * 5})
    ratios = json.loads(write_speed_ratios(tmp_path, "baseline").read_text())
    assert ratios["packed"]["speed_verdict"] == COMPILED_WHILE_TIMED
    assert "5 timed repeat(s) of baseline" in ratios["packed"]["speed_verdict_reason"]
