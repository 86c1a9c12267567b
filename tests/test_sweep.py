import textwrap

import pytest

from harness.sweep import SweepError, load_sweep


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_and_list_expand_with_a_baseline(tmp_path):
    sweep = load_sweep(
        _write(
            tmp_path,
            """
        name: t
        base: {weights: tiny, steps: 4}
        trials:
          - name: threads
            variants: {threading: 2}
        grid:
          steps: [2, 3]
          guidance: [1.0, 1.5]
        """,
        )
    )
    names = [t.name for t in sweep.trials]
    assert names[0] == "baseline" and sweep.trials[0].is_baseline
    assert "threads" in names and "steps=2,guidance=1.0" in names and len(names) == 6
    assert {t.key() for t in sweep.trials}.__len__() == 6
    trial = next(t for t in sweep.trials if t.name == "steps=3,guidance=1.5")
    assert trial.resolve().steps == 3 and trial.resolve().guidance == 1.5
    assert next(t for t in sweep.trials if t.name == "threads").tier == "exact"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: t\ngrdi:\n  steps: [2]\n", r"s.yaml:2: unknown key 'grdi'; did you mean 'grid'"),
        ("name: t\ngrid:\n  stesp: [2]\n", r"s.yaml:3: unknown variant family 'stesp'; did you mean 'steps'"),
        ("name: t\ngrid:\n  steps: [0]\n", r"s.yaml:2: .*steps: must be an integer from 1 to 1000, got 0"),
        ("name: t\nbase:\n  weights: tiny\n  detector: retinaface\n", r"s.yaml:4: detector must be one of"),
        ("name: t\nbase:\n  resolution: 300\n", r"s.yaml:3: .*resolution must be one of 256, 512"),
        (
            "name: t\ninputs:\n  - name: a\n    video: missing.mp4\n",
            r"s.yaml:4: input video file not found: missing.mp4",
        ),
        ("name: t\nbaseline: nope\n", r"s.yaml:2: baseline 'nope' names no trial"),
        (
            "name: t\ntrials:\n  - name: x\n    variants: {batch: 2, deepcache: upstream-default, steps: 2}\n"
            "  - name: y\n    variants: {precision: fp32, dtype: fp16}\n",
            r"s.yaml:6: unknown variant family 'dtype'",
        ),
    ],
)
def test_misconfigured_yaml_names_file_and_line(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        load_sweep(_write(tmp_path, text))


def test_a_list_without_grid_makes_only_its_trials(tmp_path):
    sweep = load_sweep(
        _write(tmp_path, "name: t\ntrials:\n  - name: baseline\n  - name: s2\n    variants: {steps: 2}\n")
    )
    assert [t.name for t in sweep.trials] == ["baseline", "s2"]


def test_shipped_experiments_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    quick = load_sweep(root / "quickstart.yaml")
    assert quick.trials[0].is_baseline and len(quick.trials) >= 6 and quick.trials[0].repeats >= 5
    speed = [load_sweep(path) for path in sorted((root / "speed").glob("*.yaml"))]
    assert all(t.repeats >= 5 and s.interleave for s in speed for t in s.trials)
    names = {t.name for s in speed for t in s.trials}
    assert {"lossless-stack", "lossy-stack", "compile", "pipelined"} <= names  # README's GPU table quotes these


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    import json

    import numpy as np
    from scipy.io import wavfile

    from harness.pipeline.demo_clip import demo_audio, demo_frames
    from harness.pipeline.media import VideoWriter
    from harness.sweep import run_sweep

    with VideoWriter(tmp_path / "faceless.mp4") as writer:
        for _ in range(12):
            writer.write(np.full((96, 96, 3), 80, dtype=np.uint8))
    with VideoWriter(tmp_path / "face.mp4") as writer:
        for frame in demo_frames(12):
            writer.write(frame)
    wavfile.write(tmp_path / "a.wav", 16000, demo_audio(0.48))
    sweep = load_sweep(
        _write(
            tmp_path,
            """
        name: t
        base: {weights: tiny, steps: 1, device: cpu}
        inputs:
          - {name: faceless, video: faceless.mp4, audio: a.wav}
          - {name: face, video: face.mp4, audio: a.wav}
        score: false
        torch_trace: true
        repeats: 0
        warmup: 0
        """,
        )
    )
    results = run_sweep(sweep, tmp_path / "out", inline=True, log_mlflow=False)
    by_input = {r.trial.split("/")[0]: r for r in results}
    assert by_input["faceless"].status == "failed"
    assert "no face found in frame 0" in by_input["faceless"].error
    assert by_input["face"].status == "ok"
    folder = tmp_path / "out" / "trials" / next((tmp_path / "out" / "trials").glob("face_baseline-*")).name
    assert (folder / "torch_trace.json").exists() and "torch_trace.json" in by_input["face"].artifacts
    assert {"profile.prof", "profile_top30.txt"} <= set(by_input["face"].artifacts)
    assert "cumtime" in (folder / "profile_top30.txt").read_text()
    assert (folder / "stage_times.png").stat().st_size > 0  # drawn by the sweep's process, after the trials
    table = (tmp_path / "out" / "results.csv").read_text()
    assert "failed" in table and "ok" in table
    assert json.loads((folder / "config.json").read_text())["steps"] == 1

    # The same failing trial in a fresh process (how sweeps run by default): its result comes back through
    # result.json, with the process's log kept beside it.
    from harness.launcher import run_in_subprocess

    faceless = next(t for t in sweep.trials if t.name.startswith("faceless"))
    result = run_in_subprocess(faceless, tmp_path / "fresh", baseline_output=None)
    assert result.status == "failed" and "no face found in frame 0" in result.error
    assert (tmp_path / "fresh" / "trial.log").exists() and (tmp_path / "fresh" / "result.json").exists()


def test_set_overrides_keys_and_base_fields_and_only_picks_trials(tmp_path):
    path = _write(
        tmp_path,
        """
        name: t
        base: {weights: tiny, steps: 4}
        repeats: 3
        trials:
          - name: baseline
          - name: s2
            variants: {steps: 2}
          - name: g1
            variants: {guidance: 1.0}
        """,
    )
    sweep = load_sweep(path, overrides=["repeats=1", "base.steps=5", "profile=false"], only=["g1"])
    assert [t.name for t in sweep.trials] == ["g1"]
    trial = sweep.trials[0]
    assert trial.repeats == 1 and trial.profile is False and trial.resolve().steps == 5
    assert load_sweep(path).trials[0].repeats == 3  # the file itself is unchanged
    with pytest.raises(SweepError, match=r"--set base.resolution: .*resolution must be one of 256, 512"):
        load_sweep(path, overrides=["base.resolution=300"])
    with pytest.raises(SweepError, match=r"--set repaets: .*did you mean 'repeats'"):
        load_sweep(path, overrides=["repaets=1"])
    with pytest.raises(SweepError, match=r"--only names no trial 'g1x'; did you mean 'g1'"):
        load_sweep(path, only=["g1x"])


def test_lpips_weights_are_a_pair_of_existing_files(tmp_path):
    (tmp_path / "alex.pth").write_bytes(b"x")
    text = "name: t\nscore_options:\n  lpips_weights: {}\n"
    with pytest.raises(SweepError, match=r"s.yaml:3: score option lpips_weights: expected \[AlexNet"):
        load_sweep(_write(tmp_path, text.format(tmp_path / "alex.pth")))
    with pytest.raises(
        SweepError, match=r"s.yaml:3: score option lpips_weights: file not found: .*heads.pth"
    ):
        load_sweep(_write(tmp_path, text.format([str(tmp_path / "alex.pth"), str(tmp_path / "heads.pth")])))


def test_baseline_video_outlives_the_comparisons_and_an_unchecked_gate_says_so(tmp_path):
    """keep_video: false used to delete the baseline's output before the other trials were compared with it,
    and every trial then logged a passed gate although nothing was compared."""
    import pandas as pd

    from harness.sweep import run_sweep

    text = """
        name: t
        base: {weights: tiny, steps: 1, device: cpu, max_seconds: 0.32, crf: 0}
        keep_video: false
        repeats: 0
        warmup: 0
        profile: false
        trials:
          - name: baseline
          - name: threads2
            variants: {threading: 2}
        """
    results = run_sweep(load_sweep(_write(tmp_path, text)), tmp_path / "out", inline=True, log_mlflow=False)
    assert [r.status for r in results] == ["ok", "ok"]
    threads = results[1]
    assert threads.metrics["psnr_db"] > 45 and threads.tags["fidelity_gate"] == "passed"
    assert threads.metrics["fidelity_gate_failed"] == 0
    assert not list((tmp_path / "out").rglob("output.mp4"))  # every video removed once compared

    # A trial added later finds the baseline finished but its video gone: its gate is "not checked".
    more = text + "  - name: batch2\n            variants: {batch: 2}\n"
    results = run_sweep(load_sweep(_write(tmp_path, more)), tmp_path / "out", inline=True, log_mlflow=False)
    batch = next(r for r in results if r.trial == "batch2")
    assert (
        batch.tags["fidelity_gate"] == "not checked"
        and "no longer exists" in batch.tags["fidelity_gate_reason"]
    )
    assert "fidelity_gate_failed" not in batch.metrics and "psnr_db" not in batch.metrics
    table = pd.read_csv(tmp_path / "out" / "results.csv").set_index("trial")
    assert table.loc["batch2", "fidelity_gate"] == "not checked" and pd.isna(
        table.loc["batch2", "fidelity_gate_failed"]
    )


def test_graphs_compiled_during_timed_repeats_are_recorded_and_warned_of(tmp_path, monkeypatch, caplog):
    """Each timed run counts the graphs torch.compile built in it (harness.trackers.compiles); here a stand-in
    count that grows by one in every run, as a model recompiling on each call would: every repeat records it,
    the trial sums it and the log says its times include compiling (harness.noise then gives no verdict)."""
    import json
    import logging
    from itertools import count

    from scipy.io import wavfile

    from harness.pipeline.demo_clip import demo_audio, demo_frames
    from harness.pipeline.media import VideoWriter
    from harness.sweep import run_sweep
    from harness.trackers import compiles

    with VideoWriter(tmp_path / "face.mp4") as writer:
        for frame in demo_frames(12):
            writer.write(frame)
    wavfile.write(tmp_path / "a.wav", 16000, demo_audio(0.48))
    sweep = load_sweep(_write(tmp_path, """
        name: t
        base: {weights: tiny, steps: 1, device: cpu}
        inputs: [{name: face, video: face.mp4, audio: a.wav}]
        score: false
        profile: false
        repeats: 2
        warmup: 0
        """))
    built = count()
    monkeypatch.setattr(compiles, "graphs_built", lambda: next(built))
    with caplog.at_level(logging.WARNING, logger="harness.runner"):
        (result,) = run_sweep(sweep, tmp_path / "out", inline=True, log_mlflow=False)
    assert result.status == "ok", result.error
    assert result.metrics["timed_graphs_compiled"] == 2.0
    (folder,) = (tmp_path / "out" / "trials").glob("*baseline-*")
    timed = json.loads((folder / "timed_runs.json").read_text())
    assert [run["graphs_compiled"] for run in [timed["cold"], *timed["runs"]]] == [1.0, 1.0, 1.0]
    assert "built 2 graph(s) during the timed repeats" in caplog.text
