"""A sweep's default path end to end: real trial processes on tiny weights, 5 repeats each, timed in shuffled
rounds beside the resident baseline, judged from paired rounds (the schedule's rules are tested on stand-ins in
test_noise); and run again after an interruption, it keeps the timed repeats each trial had (with their rounds,
still paired with the baseline's) and times only the rest."""

import json
import textwrap

import pandas as pd
import pytest

from harness.noise import FASTER, NOT_DISTINGUISHABLE, SLOWER
from harness.partial_repeats import PARTIAL_FILE, earlier_repeats, keep_paired, save_partial
from harness.results import write_json_atomic
from harness.runner import resolve_inputs
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


EARLIER = ["0000beef-1", "0000beef-2"]  # the rounds of the interrupted run (its seed, then the round's number)


def _runs(total_s: float) -> list[dict]:
    return [{"total_s": total_s, "denoise_s": total_s / 2}, {"total_s": total_s + 0.1, "denoise_s": total_s / 2}]


def test_repeats_are_kept_only_from_this_machine_and_an_interleaved_run(tmp_path):
    assert earlier_repeats(tmp_path) == ([], [])  # none left
    save_partial(tmp_path, _runs(1.0), EARLIER)
    assert earlier_repeats(tmp_path) == (_runs(1.0), EARLIER)
    assert keep_paired(tmp_path, {*EARLIER, "0000beef-9"}) == 0  # each has the baseline's repeat of its round
    assert earlier_repeats(tmp_path) == (_runs(1.0), EARLIER)
    assert keep_paired(tmp_path, {EARLIER[1]}) == 1  # the baseline's repeat of the first round was never timed
    assert earlier_repeats(tmp_path) == (_runs(1.0)[1:], EARLIER[1:])
    save_partial(tmp_path, _runs(1.0), EARLIER)
    write_json_atomic(tmp_path / PARTIAL_FILE, {"machine": "elsewhere/0", "runs": _runs(1.0), "rounds": EARLIER})
    assert earlier_repeats(tmp_path) == ([], [])  # another machine's times do not compare
    save_partial(tmp_path, _runs(1.0), [None, None])
    assert earlier_repeats(tmp_path) == ([], [])  # no rounds to pair them by
    (tmp_path / PARTIAL_FILE).write_text("{not json")
    assert earlier_repeats(tmp_path) == ([], [])


@pytest.mark.slow
def test_a_sweep_run_again_times_only_the_repeats_still_missing(tmp_path):
    path = tmp_path / "s.yaml"
    # the same sweep with 3 repeats and two trials
    path.write_text(textwrap.dedent(SWEEP).replace("repeats: 5", "repeats: 3").split("  - name: threads2")[0])
    sweep = load_sweep(path)
    out = tmp_path / "out"
    # what a run stopped in its third round leaves: each trial's first two repeats, timed beside each other, and
    # no-guidance's third, whose round's baseline repeat was never timed: an orphan, which would leave the trial
    # unpaired, so it is timed again beside the baseline
    folders = {t.name: out / "trials" / resolve_inputs(t).folder_name() for t in sweep.trials}
    for name, folder in folders.items():
        folder.mkdir(parents=True)
        save_partial(folder, _runs(1.5 if name == "baseline" else 1.2), EARLIER)
    orphan = {"total_s": 9.0, "denoise_s": 4.5}
    save_partial(folders["no-guidance"], [*_runs(1.2), orphan], [*EARLIER, "0000beef-3"])
    run_sweep(sweep, out, log_mlflow=False)

    table = pd.read_csv(out / "results.csv").set_index("trial")
    assert set(table["status"]) == {"ok"}, table[["status", "error"]]
    [record] = json.loads((out / "rounds.json").read_text()).values()
    assert [sorted(order) for order in record["rounds"]] == [sorted(folders)]  # one new round, not three
    assert record["kept_repeats"] == {"baseline": 2, "no-guidance": 2}
    new_round = f"{record['seed']:08x}-1"
    for name, folder in folders.items():
        timed = json.loads((folder / "timed_runs.json").read_text())
        assert timed["rounds"] == [*EARLIER, new_round]
        assert timed["runs"][:2] == _runs(1.5 if name == "baseline" else 1.2)  # kept as they were
        assert timed["runs"][2]["total_s"] > 0 and "audio_s" in timed["runs"][2]  # timed now, every stage
        assert not (folder / PARTIAL_FILE).exists()  # finished: nothing left to resume
    assert table.loc["no-guidance", "timed_repeats"] == 3 and table.loc["no-guidance", "speed_paired"]
