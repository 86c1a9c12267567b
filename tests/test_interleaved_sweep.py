"""A sweep's default path end to end: real trial processes on tiny weights, 5 repeats each, timed in shuffled
rounds beside the resident baseline, judged from paired rounds (the schedule's rules are tested on stand-ins in
test_noise)."""

import json
import textwrap

import pandas as pd
import pytest

from harness.noise import FASTER, NOT_DISTINGUISHABLE, SLOWER
from harness.sweep import load_sweep, run_sweep

# 4 frames and 1 step: a timed run takes 1-3 s here (most of it the audio features), a process ~10 s to start.
SWEEP = """
name: rounds
base: {weights: tiny, resolution: 256, steps: 1, device: cpu, max_seconds: 0.16, crf: 0}
repeats: 5
warmup: 0
profile: false
score: false
trials:
  - name: baseline
  - name: no-guidance
    variants: {guidance: 1.0}
  - name: threads2
    variants: {threading: 2}
"""


@pytest.mark.slow
def test_the_default_sweep_times_each_trial_in_rounds_beside_the_baseline(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    sweep = load_sweep(path)
    assert sweep.interleave and sweep.max_processes is None and sweep.overlap_startup  # the defaults
    run_sweep(sweep, tmp_path / "out", log_mlflow=False)

    out = tmp_path / "out"
    table = pd.read_csv(out / "results.csv").set_index("trial")
    assert set(table["status"]) == {"ok"}, table[["status", "error"]]
    [record] = json.loads((out / "rounds.json").read_text()).values()
    assert isinstance(record["seed"], int) and record["largest_process_mb"] > 100  # a real process's RSS
    assert [sorted(order) for order in record["rounds"]] == [sorted(table.index)] * 5
    rounds = {}
    for name in table.index:
        folder = out / "trials" / table.loc[name, "folder"].split("/")[-1]
        assert (folder / "trial.log").exists()  # it ran in a process of its own
        rounds[name] = json.loads((folder / "timed_runs.json").read_text())["rounds"]
    assert rounds["baseline"] == [f"{record['seed']:08x}-{i}" for i in range(1, 6)]
    for name in ("no-guidance", "threads2"):
        assert rounds[name] == rounds["baseline"]  # every repeat beside the baseline's of the same round
        assert table.loc[name, "timed_repeats"] == 5 and table.loc[name, "speed_paired"]
        assert table.loc[name, "speed_verdict"] in (FASTER, SLOWER, NOT_DISTINGUISHABLE)
        assert (
            table.loc[name, "speedup_x_low"]
            <= table.loc[name, "speedup_x"]
            <= table.loc[name, "speedup_x_high"]
        )
