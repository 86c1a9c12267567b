"""Nothing lost, nothing doubled: inputs are never written over, folders are held by one harness process at a
time, names from files cannot point outside the output folder, and what can be checked before loading models
is checked before, with messages rather than tracebacks. (Kills and resumes: tests/test_quickstart.py.)"""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from harness.cli import main
from harness.folder_lock import FolderBusyError, FolderLock
from harness.preflight import PreflightError, check_output
from harness.sweep import SweepError, load_sweep, run_sweep


def _run(*args: str) -> list[str]:
    return ["run", "--weights", "tiny", "--device", "cpu", *args]


@pytest.mark.parametrize("spelling", ["same", "relative", "absolute", "symlink", "hardlink", "audio"])
def test_run_never_writes_over_an_input(media, tmp_path, monkeypatch, capsys, spelling):
    video, audio = media
    monkeypatch.chdir(video.parent)
    out = {
        "same": str(video),
        "relative": f"./{video.name}",
        "absolute": str(video.resolve()),
        "symlink": str(tmp_path / "link.mp4"),
        "hardlink": str(tmp_path / "hard.mp4"),
        "audio": str(audio),
    }[spelling]
    if spelling == "symlink":
        os.symlink(video, out)
    if spelling == "hardlink":
        os.link(video, out)
    before = video.read_bytes(), audio.read_bytes()
    code = main(
        _run("--video", video.name, "--audio", str(audio), "--out", out, "--run-dir", str(tmp_path / "r"))
    )
    assert code == 2
    assert "never writes over its own inputs" in capsys.readouterr().err
    assert (video.read_bytes(), audio.read_bytes()) == before
    assert not (tmp_path / "r").exists()  # stopped before the run folder was made


def test_sweep_whose_output_is_an_input_stops_before_any_trial(media, tmp_path):
    video, audio = media
    before = video.read_bytes()
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: s
        base: {{weights: tiny, device: cpu, out: {video}}}
        keep_video: false
        inputs: [{{name: a, video: {video}, audio: {audio}}}]
        trials: [{{name: two, variants: {{steps: 2}}}}]
        """)
    )
    with pytest.raises(SweepError, match="trial 'baseline'.*never writes over its own inputs"):
        run_sweep(load_sweep(path), tmp_path / "out", log_mlflow=False)
    assert video.read_bytes() == before
    assert not (tmp_path / "out" / "trials").exists()


def test_output_checks_name_the_path(tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"x")
    with pytest.raises(PreflightError, match=r"unknown container '\.avi1'"):
        check_output(tmp_path / "o.avi1", [source])
    with pytest.raises(PreflightError, match="is a folder"):
        check_output(tmp_path, [source])
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(PreflightError, match=f"cannot write in {blocker}"):
        check_output(blocker / "o.mp4", [source])
    check_output(tmp_path / "new" / "o.mp4", [source])  # a folder that does not exist yet is made


def test_bad_inputs_and_device_fail_up_front_with_a_message(media, tmp_path, capsys):
    video, audio = media
    cases = [
        (["--video", str(tmp_path / "none.mp4"), "--audio", str(audio)], "none.mp4: no such file"),
        (["--video", str(audio), "--audio", str(audio)], "holds no video stream"),
        (["--video", str(video), "--audio", str(video)], "holds no audio stream"),
        (["--video", str(video), "--audio", str(audio), "--device", "cudaa"], "'cudaa': not a device"),
        (
            ["--video", str(video), "--audio", str(audio), "--out", str(tmp_path / "o.avi1")],
            "unknown container",
        ),
    ]
    for args, message in cases:
        began = time.perf_counter()
        assert main(_run(*args, "--run-dir", str(tmp_path / "r"))) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert time.perf_counter() - began < 10  # nothing loaded
    assert not (tmp_path / "r").exists()


def test_oserror_is_reported_with_its_path(tmp_path, capsys, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "mlflow.db"))

    monkeypatch.setattr("harness.cli.cmd_variants", refuse)
    assert main(["variants"]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(tmp_path / "mlflow.db") in err


def test_a_second_sweep_on_a_held_folder_stops_with_a_message(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {weights: tiny, device: cpu}\n")
    out = tmp_path / "out"
    with FolderLock(out, what="sweep s"):
        with pytest.raises(FolderBusyError, match=rf"{out} is in use by harness sweep s, pid {os.getpid()}"):
            run_sweep(load_sweep(path), out, log_mlflow=False)
    assert not (out / "trials").exists()


def test_folder_lock_is_dropped_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from harness.folder_lock import FolderLock; FolderLock({str(tmp_path)!r}, 'test').acquire(); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"):
        FolderLock(tmp_path, "test").acquire()
    holder.kill()
    holder.wait()
    with FolderLock(tmp_path, "test", wait_s=5):
        pass


@pytest.mark.parametrize(
    "name, message",
    [
        ("../../x", "name '../../x': use letters"),
        ("/tmp/x", "name '/tmp/x': use letters"),
        ("a/b", "name 'a/b': use letters"),
    ],
)
def test_sweep_names_cannot_point_outside_the_output_folder(tmp_path, name, message):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: {name!r}\n")
    with pytest.raises(SweepError, match=message):
        load_sweep(path)


def test_trial_names_that_would_share_a_folder_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\ntrials:\n  - {name: 'a b', variants: {steps: 2}}\n  - {name: a_b, variants: {steps: 3}}\n"
    )
    with pytest.raises(SweepError, match="'a b' and 'a_b' differ only in characters"):
        load_sweep(path)


def test_score_exits_nonzero_when_no_score_could_be_computed(tmp_path, capsys):
    silent = tmp_path / "silent.mp4"
    import numpy as np

    from harness.pipeline.media import VideoWriter

    with VideoWriter(silent, fps=25) as writer:
        for _ in range(3):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    code = main(["score", str(silent)])
    assert code == 1
    assert "no score could be computed" in capsys.readouterr().err


LOG_WHEN_TOLD = """
import sys, time
from pathlib import Path
from harness.tracking import log_sweep
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
log_sweep(sys.argv[1], experiment_name="race", tracking_uri=sys.argv[2])
"""


def test_two_sweeps_logging_at_once_to_a_fresh_sqlite_store_both_succeed(tmp_path):
    from mlflow.tracking import MlflowClient
    from test_tracking_mlflow import make_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweeps = [make_sweep(tmp_path / name) for name in ("a", "b")]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOG_WHEN_TOLD, str(sweep), uri, str(go)], stderr=subprocess.PIPE, text=True
        )
        for sweep in sweeps
    ]
    time.sleep(3)  # both are waiting, imports done, before either creates the store's schema
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len([r for r in runs if r.data.tags.get("harness.role") == "sweep"]) == 2


def test_runs_left_running_by_a_kill_are_closed_as_killed_under_the_same_parent(tmp_path):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient
    from test_tracking_mlflow import make_sweep

    from harness.tracking import log_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = make_sweep(tmp_path)
    parent = log_sweep(sweep, experiment_name="e", tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("e").experiment_id
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    # as a kill between creating a trial's run and closing it leaves things: that run RUNNING, the parent too
    half = children[0]
    client.update_run(half.info.run_id, status="RUNNING")
    client.update_run(parent, status="RUNNING")
    assert log_sweep(sweep, experiment_name="e", tracking_uri=uri) == parent
    every = client.search_runs([experiment], run_view_type=ViewType.ALL)
    assert not [r for r in every if r.info.status == "RUNNING"]
    assert client.get_run(half.info.run_id).info.status == "KILLED"
    active = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    trial_ids = [r.data.tags["harness.trial_id"] for r in active]
    assert sorted(trial_ids) == sorted(r.data.tags["harness.trial_id"] for r in children)  # each once
    assert client.get_run(parent).info.status == "FINISHED"
