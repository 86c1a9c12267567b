"""Nothing wrong passes as ok: hostile or malformed sweep files, non-finite and out-of-range settings, damaged
inputs, stale results, an MLflow store that is down and a sweep still running each end in a clear message
before anything loads, or in a correct result labelled as such. No model runs here: every check happens
before the models would load (or a finished trial is written by hand)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.results import TIMED_RUNS_FILE, TrialResult, write_json_atomic
from harness.sweep import STALE_DIR, SweepError, load_sweep, set_aside_stale
from harness.trial import Trial


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- sweep files ------------------------------------------------------------------------------------------


def test_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = _write(tmp_path / "bomb.yaml", "\n".join([*lines, "grid: {steps: *a9}"]) + "\n")
    began = time.perf_counter()
    with pytest.raises(SweepError, match=r"bomb.yaml:6: through its aliases .* more than 100000 values"):
        load_sweep(path)
    assert time.perf_counter() - began < 2
    with pytest.raises(SweepError, match=r"loop.yaml:1: an alias here refers to a value that holds it"):
        load_sweep(_write(tmp_path / "loop.yaml", "a: &a [*a]\n"))
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(SweepError, match=r"big.yaml: \d+ bytes; a sweep file holds at most 1048576"):
        load_sweep(big)
    # anchors and merge keys within the bound still work
    ok = load_sweep(
        _write(tmp_path / "ok.yaml", "base: &b {steps: 2}\ntrials:\n  - name: a\n    variants: {<<: *b}\n")
    )
    assert ok.trials[1].variants == {"steps": 2}


@pytest.mark.parametrize(
    "text, message",
    [
        ("repeats: [1, 2]\n", r"s.yaml:1: repeats: expected a whole number from 0 to 10000, got list"),
        ("repeats: many\n", r"s.yaml:1: repeats: expected a whole number .*, got str 'many'"),
        ("trials: [baseline]\n", r"s.yaml:1: trials\[0\]: expected a mapping .*got str 'baseline'"),
        ("trials: {baseline: {}}\n", r"s.yaml:1: trials: expected a list \(- item\), got dict"),
        ("inputs: demo\n", r"s.yaml:1: inputs: expected a list \(- item\), got str 'demo'"),
        (
            "trials:\n  - name: a\n    variant: {steps: 2}\n",
            r"s.yaml:3: trials\[0\]: unknown key 'variant'; did",
        ),
        ("name: a\nname: b\n", r"s.yaml:2: key 'name' appears twice in one mapping \(first on line 1\)"),
        ("grid:\n  steps: []\n", r"s.yaml:2: grid.steps: the axis has no values"),
        ("", r"s.yaml: the file is empty \(or holds only comments\)"),
        ("# nothing but a comment\n", r"s.yaml: the file is empty \(or holds only comments\)"),
        ("base: {guidance: .nan}\n", r"s.yaml:1: guidance must be a finite number .*got nan"),
        ("grid: {guidance: [.inf]}\n", r"s.yaml:1: trial 'guidance=inf': guidance: must be a finite number"),
    ],
)
def test_malformed_sweep_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        load_sweep(_write(tmp_path / "s.yaml", text))


def test_malformed_sweep_file_exits_2_without_a_traceback(tmp_path, capsys):
    assert main(["sweep", str(_write(tmp_path / "s.yaml", "trials: [baseline]\n")), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "s.yaml:1: trials[0]: expected a mapping" in err and "Traceback" not in err


# -- settings: finite, in range, checked before anything loads ------------------------------------------------


@pytest.mark.parametrize(
    "option, message",
    [
        (["--guidance", "inf"], "guidance must be a finite number"),
        (["--guidance", "nan"], "guidance must be a finite number"),
        (["--max-seconds", "nan"], "max_seconds must be a finite number"),
        (["--seed", "12345678901234567890123"], "seed must be an integer from -9223372036854775808 to"),
        (["--steps", "1001"], "steps must be an integer from 1 to 1000"),
    ],
)
def test_non_finite_and_out_of_range_settings_stop_the_run_before_it_starts(
    tmp_path, capsys, option, message
):
    run_dir = tmp_path / "r"
    assert main(["run", "--weights", "tiny", "--device", "cpu", *option, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run_dir.exists()


# -- inputs: non-finite audio, truncated video, identity by content ------------------------------------------


def _float_wav(path: Path, bad_at: int | None, value: float = float("nan")) -> Path:
    import av

    samples = (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    if bad_at is not None:
        samples[bad_at] = value
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def test_audio_with_non_finite_samples_is_refused_before_loading(media, tmp_path, capsys):
    from harness.pipeline.media import MediaError, read_audio

    video, _ = media
    nan_wav = _float_wav(tmp_path / "nan.wav", bad_at=8037)
    with pytest.raises(
        MediaError, match=r"non-finite sample \(inf\) at t = 0.125 s \(sample 2000 at 16000 Hz\)"
    ):
        read_audio(_float_wav(tmp_path / "inf.wav", bad_at=2000, value=float("inf")))
    run_dir = tmp_path / "r"
    args = ["run", "--weights", "tiny", "--device", "cpu", "--video", str(video), "--audio", str(nan_wav)]
    assert main([*args, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{nan_wav}: the audio holds a non-finite sample (nan) at t = 0.502 s" in err
    assert not run_dir.exists()


def _cut_video(folder: Path, frames: int = 20, keep: int = 9) -> Path:
    """An mp4 with its index at the front (faststart) cut after `keep` of its `frames` frames' data."""
    import av

    whole = folder / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 8 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(whole)) as container:
        ends = [p.pos + p.size for p in container.demux(container.streams.video[0]) if p.size]
    cut = folder / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: ends[keep - 1]])
    return cut


def test_truncated_video_stops_before_loading_or_runs_with_the_warning_recorded(media, tmp_path, capsys):
    from harness.runner import run_trial

    _, audio = media
    cut = _cut_video(tmp_path)
    run_dir = tmp_path / "r"
    args = ["run", "--weights", "tiny", "--device", "cpu", "--video", str(cut), "--audio", str(audio)]
    assert main([*args, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{cut}: holds 9 of the 20 frames its container declares" in err and "truncated_video: warn" in err
    assert not run_dir.exists()
    # told to go on, the run records the warning in its result (here it then fails at loading: no weights)
    base = {"weights": str(tmp_path / "no-weights"), "device": "cpu", "truncated_video": "warn"}
    trial = Trial(
        name="t", base=base, video=str(cut), audio=str(audio), repeats=0, profile=False, score=False
    )
    result = run_trial(trial, tmp_path / "trial")
    saved = json.loads((tmp_path / "trial" / "result.json").read_text())
    assert result.status == "failed"
    assert saved["tags"]["input_warnings"] == f"{cut}: holds 9 of the 20 frames its container declares " + (
        "(the file is cut short or damaged)"
    )


def test_an_input_changed_in_place_is_a_new_trial(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"RIFF" + bytes(100))
    trial = Trial(name="t", video=str(a), audio=str(a))
    before = trial.key()
    stat = a.stat()
    b.write_bytes(b"RIFF" + bytes(99) + b"\x01")  # same size, other content
    os.replace(b, a)
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # its time reset, as `cp -p` or `touch -r` do
    assert a.stat().st_size == stat.st_size and a.stat().st_mtime_ns == stat.st_mtime_ns
    assert trial.key() != before


# -- sweeps: stale results, exit codes, MLflow down, running sweeps ---------------------------------------------


def _finish(out: Path, trial: Trial, fps: float) -> Path:
    """Write what a finished ok trial leaves in its folder (one timed repeat of 10 frames)."""
    from harness.runner import resolve_inputs

    folder = out / "trials" / resolve_inputs(trial).folder_name()
    runs = [{"total_s": 10 / fps, "denoise_s": 5 / fps}]
    write_json_atomic(folder / TIMED_RUNS_FILE, {"cold": runs[0], "runs": runs})
    write_json_atomic(folder / "config.json", trial.resolve().to_dict())
    metrics = {"frames": 10.0, "fps": fps, "rtf": fps / 25, "total_s": 10 / fps}
    TrialResult(
        trial=trial.name, status="ok", key=trial.key(), variants=trial.variants, metrics=metrics
    ).write(folder)
    return folder


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One SQLite store for the tests that log (its schema takes seconds to create); each sweep its own name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


SWEEP = """
name: {name}
base: {{weights: tiny, device: cpu}}
inputs: [{{name: demo, video: {video}, audio: {audio}}}]
profile: false
score: false
trials:
  - name: baseline
  - name: fast
    variants: {{steps: {steps}}}
"""


def test_an_edited_trial_sets_its_stale_result_aside_everywhere(media, tmp_path, monkeypatch, mlflow_store):
    from mlflow.tracking import MlflowClient

    video, audio = media
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    out, path = tmp_path / "out", tmp_path / "s.yaml"
    _write(path, SWEEP.format(name="edited", video=video, audio=audio, steps=2))
    first = load_sweep(path)
    for trial, fps in zip(first.trials, (10.0, 20.0), strict=True):
        _finish(out, trial, fps)
    assert main(["sweep", str(path), "--out-dir", str(out)]) == 0  # both finished: tabled and logged
    # the same trial name with other settings: its old folder must not stand for it
    _write(path, SWEEP.format(name="edited", video=video, audio=audio, steps=3))
    edited = load_sweep(path)
    old = out / "trials" / first.trials[1].folder_name()
    new = _finish(out, edited.trials[1], 30.0)
    assert main(["sweep", str(path), "--out-dir", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["trial"]) == ["baseline", "fast"]
    assert table.set_index("trial").at["fast", "fps"] == 30.0
    assert not old.exists() and (out / STALE_DIR / old.name).is_dir()
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("edited").experiment_id])
    parents = [r.info.run_id for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r.data.tags["harness.trial_id"] for r in runs if r.data.tags.get("harness.role") == "trial"]
    assert len(parents) == 1 and sorted(children) == sorted([first.trials[0].folder_name(), new.name])
    report = (out / "report" / "report.md").read_text()
    assert "| fast | 30.00 |" in report and "| fast | 20.00 |" not in report
    # back to the first settings: the set-aside folder is current again and comes back instead of re-running
    set_aside_stale(first, out)
    assert old.is_dir() and (out / STALE_DIR / new.name).is_dir() and not new.exists()


def test_a_sweep_with_a_failed_trial_exits_1_naming_it(media, tmp_path, capsys):
    video, audio = media
    path = _write(tmp_path / "s.yaml", SWEEP.format(name="s", video=video, audio=audio, steps=2))
    path.write_text(path.read_text().replace("weights: tiny", f"weights: {tmp_path / 'no-weights'}"))
    out = tmp_path / "out"
    _finish(out, load_sweep(path).trials[0], 10.0)  # the baseline finished; "fast" fails at loading
    assert main(["sweep", str(path), "--out-dir", str(out), "--inline", "--no-mlflow"]) == 1
    captured = capsys.readouterr()
    assert "error: 1 of 2 trial(s) failed: fast" in captured.err
    assert "| baseline | ok |" in captured.out and "| fast | failed |" in captured.out


@pytest.fixture
def half_broken_mlflow() -> Iterator[str]:
    """A server that answers the reachability check and fails every other request (500: retried)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ok = "experiments/search" in self.path
            body = b'{"experiments": []}' if ok else b'{"error_code": "INTERNAL_ERROR"}'
            self.send_response(200 if ok else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mlflow_stops_the_sweep_before_its_first_trial(media, tmp_path, monkeypatch, capsys):
    video, audio = media
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    path = _write(tmp_path / "s.yaml", SWEEP.format(name="s", video=video, audio=audio, steps=2))
    began = time.perf_counter()
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - began < 10
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "--no-mlflow" in err and "--log-only" in err
    assert not (tmp_path / "out" / "trials").exists()


def test_mlflow_failing_after_the_trials_still_writes_table_and_report_and_exits_1(
    media, tmp_path, monkeypatch, capsys, half_broken_mlflow, mlflow_store
):
    video, audio = media
    monkeypatch.setenv("MLFLOW_TRACKING_URI", half_broken_mlflow)
    path = _write(tmp_path / "s.yaml", SWEEP.format(name="s", video=video, audio=audio, steps=2))
    out = tmp_path / "out"
    for trial, fps in zip(load_sweep(path).trials, (10.0, 20.0), strict=True):
        _finish(out, trial, fps)
    began = time.perf_counter()
    assert main(["sweep", str(path), "--out-dir", str(out)]) == 1
    assert time.perf_counter() - began < 30  # MLflow's own retries would take minutes
    err = capsys.readouterr().err
    assert "logging to MLflow failed" in err and f"harness sweep {path} --log-only" in err
    assert (out / "results.csv").exists() and (out / "report" / "report.md").exists()
    # later, with a store that works: the finished trials are logged without running anything again
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    assert main(["sweep", str(path), "--out-dir", str(out), "--log-only"]) == 0
    runs = json.loads((out / "mlflow_runs.json").read_text())["runs"]
    assert sorted(runs) == ["baseline", "fast"]


def test_report_on_a_running_sweep_is_partial_or_a_message(tmp_path, capsys):
    folder = tmp_path / "running"
    write_json_atomic(
        folder / "sweep.json", {"name": "running", "baseline": "baseline", "trials": ["baseline", "fast"]}
    )
    (folder / "trials" / "baseline-0000").mkdir(parents=True)  # started, no result yet
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "no trial has finished yet (no result yet: baseline, fast)" in err and "Traceback" not in err
    TrialResult(trial="baseline", status="failed", error="boom").write(folder / "trials" / "baseline-0000")
    assert main(["report", str(folder)]) == 0  # nothing ok: a report all the same
    text = (folder / "report" / "report.md").read_text()
    assert "> **Partial report.** 1 trial(s) have no result yet" in text and "`fast`" in text
    assert "- `baseline`: failed: boom" in text


def test_a_full_disk_leaves_no_partial_npy_and_names_the_file(tmp_path):
    target = tmp_path / "matrices.npy"
    script = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        from harness.results import write_npy_atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            write_npy_atomic({str(target)!r}, np.zeros((1000, 2, 3), np.float32))
        except OSError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert str(target) in done.stdout, done.stdout + done.stderr
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary
