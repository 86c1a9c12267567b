"""The README's main job: `harness sweep experiments/quickstart.yaml` on a fresh CPU machine, logged to the
default embedded MLflow store, and the soak test of a sweep's kill-safety: the sweep is killed at random
moments five times (SIGTERM, and once Ctrl-C's SIGINT) and run again until it completes; it must end with every
trial exactly once in results.csv and under one MLflow parent run, no run left RUNNING, no stray process and
no temporary file. A last run skips every finished trial."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from harness.sweep import load_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


# The shipped file with one run (the cold run, no profiled pass) per trial, each in its own process as by
# default: the cProfile files are tested in test_sweep, the timed rounds in test_interleaved_sweep.
QUICK = ["--set", "repeats=0", "--set", "profile=false"]
# its six trials, as the soak test asks: the baseline, two lossless and three lossy variants
TRIALS = ["baseline", "threads2", "batch2", "no-guidance", "deepcache", "steps=2,scheduler=dpm++"]
KILLS = 5


def _command() -> list[str]:
    return [sys.executable, "-m", "harness.cli", "sweep", str(QUICKSTART), "--out-dir", "out", *QUICK]


def _env(workdir: Path) -> dict[str, str]:
    (workdir / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(workdir / "tmp")}  # so the test can see every temporary file left


def _sweep(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(), cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=1800, check=False
    )


def _wait_for_a_trial_process(sweep: subprocess.Popen, timeout_s: float = 120) -> bool:
    """Wait until the sweep has started a trial process: its own start-up (imports, checks) takes seconds too,
    longer on a busy machine, and a kill then would reach no trial. False when the sweep ended well without one:
    on a quiet machine the earlier attempts can finish every trial (a kill may land just after one ended)."""
    deadline = time.monotonic() + timeout_s
    while sweep.poll() is None and time.monotonic() < deadline:
        try:
            children = [" ".join(child.cmdline()) for child in psutil.Process(sweep.pid).children()]
        except psutil.Error:  # a child ending while it is looked at
            children = []
        if any("harness.launcher" in command for command in children):
            return True
        time.sleep(0.1)
    if sweep.poll() == 0:
        return False
    raise AssertionError(f"the sweep started no trial process (exit code {sweep.poll()})")


def _killed_sweeps(workdir: Path, seed: int) -> list[str]:
    """Start the sweep and kill it at a random moment, KILLS times; returns each killed trial's recorded error."""
    rng = random.Random(seed)
    errors: list[str] = []
    for attempt in range(KILLS):
        proc = subprocess.Popen(
            _command(),
            cwd=workdir,
            env=_env(workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if not _wait_for_a_trial_process(proc):
            break
        # A trial process lives about 15 s here, in CI as alone: some 6 s of imports, 3 s of loading, 5 s of
        # running, then scoring. Up to 12 s into it, the kill lands in any of the first three.
        time.sleep(rng.uniform(0, 12))
        proc.send_signal(signal.SIGINT if attempt == 2 else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0:  # it finished before the signal came
            continue
        assert proc.returncode in (130, 143), stderr[-3000:]
        assert "Traceback" not in stderr and "interrupted" in stderr, stderr[-3000:]
        for result in (workdir / "out" / "trials").glob("*/result.json"):
            if result.stat().st_mtime > time.time() - 60:
                errors += [line for line in result.read_text().splitlines() if '"error": "killed:' in line]
    return errors


@pytest.mark.slow
def test_quickstart_sweep_killed_and_resumed_logs_every_trial_once(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seed = random.randrange(10**6)
    print(f"kill moments drawn with seed {seed}")
    killed = _killed_sweeps(tmp_path, seed)
    assert killed, "no kill landed in a running trial"  # a trial's time is almost all of the sweep's
    first = _sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = load_sweep(QUICKSTART).trials
    assert [t.name for t in trials] == TRIALS
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(table["trial"]) == sorted(t.name for t in trials)  # each trial exactly once
    assert set(table["status"]) == {"ok"}, table[["trial", "status", "error"]]
    ok = table.set_index("trial")
    assert (ok["fps"] > 0).all() and (ok["denoise_s"] > 0).all() and (ok["peak_rss_mb"] > 0).all()
    # lossless variants reproduce the baseline (lossless output: crf 0); lossy ones do not
    assert ok.loc["threads2", "psnr_db"] > 45 and ok.loc["batch2", "psnr_db"] > 45
    assert ok.loc["no-guidance", "psnr_db"] < ok.loc["batch2", "psnr_db"]
    assert set(ok.loc[["threads2", "batch2"], "fidelity_gate"]) == {"passed"}
    lossy = ["no-guidance", "deepcache", "steps=2,scheduler=dpm++"]
    assert set(ok.loc[lossy, "fidelity_gate"]) == {"not applicable"}
    assert "psnr_outside_mouth_db" in ok.columns

    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == len(trials) == len(runs) - 1
    assert sorted(r.data.tags["harness.trial_id"] for r in children) == sorted(
        Path(f).name for f in table["folder"]
    )
    every = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    assert not [r for r in every if r.info.status == "RUNNING"]
    child = next(r for r in children if r.info.run_name == "baseline")
    assert (
        child.data.params["config.steps"] == str(trials[0].resolve().steps) and child.data.metrics["fps"] > 0
    )
    assert child.data.tags["weights.synthetic"] == "true"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"stage_times.md", "stage_times.png", "output.mp4"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert {"plots/fps.png", "plots/stage_times.png", "plots/speed_vs_quality.png"} <= plots

    _check_report(tmp_path / "out", client, children)

    again = _sweep(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipping finished trial") == len(trials)
    runs_after = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs_after) == len(runs)
    stray = [
        p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert not stray, f"processes of the sweep still running: {stray}"
    leftovers = [
        p
        for p in tmp_path.rglob("*")
        if p.name.endswith(".tmp") or ".partial" in p.name or ".video." in p.name
    ]
    assert not leftovers, leftovers
    # torch makes an (empty) inductor cache folder under TMPDIR; nothing of the harness may stay there
    assert not [p for p in (tmp_path / "tmp").rglob("*") if p.is_file() or "harness" in p.name]


def _check_report(out: Path, client, children: list) -> None:
    """The report the sweep wrote: its tables hold the logged numbers, its PNGs are real images."""
    import cv2

    from reports.sweep_data import load
    from reports.tables import quality_table, speed_table

    text = (out / "report" / "report.md").read_text()
    assert text.startswith("# Sweep `quickstart`") and "Not LatentSync's weights" in text
    csv = pd.read_csv(out / "results.csv").set_index("trial")
    speed, quality = speed_table(load(out)), quality_table(load(out))
    assert list(speed.index)[0] == "baseline" and sorted(speed.index) == sorted(csv.index)
    runs = {r.data.tags["harness.trial_id"]: r for r in children}
    for trial, row in speed.iterrows():
        logged = runs[Path(csv.loc[trial, "folder"]).name].data
        for column in ("fps", "rtf", "peak_rss_mb", "denoise_s", "total_s"):
            assert (
                row[column] == pytest.approx(csv.loc[trial, column]) == pytest.approx(logged.metrics[column])
            )
        assert f"| {trial} | {row['fps']:.2f} | {row['rtf']:.3f} |" in text
        # with the CI's single cold run there is no spread to judge by: never a verdict, and it says why
        assert row["speed_verdict"] == ("baseline" if trial == "baseline" else "too few repeats")
        assert logged.tags["speed_verdict"] == row["speed_verdict"]
        if trial != "baseline":
            assert quality.loc[trial, "psnr_db"] == pytest.approx(logged.metrics["psnr_db"])
            assert quality.loc[trial, "fidelity_gate"] == logged.tags["fidelity_gate"]
            assert quality.loc[trial, "psnr_outside_mouth_db_diff"] == pytest.approx(
                logged.metrics["psnr_outside_mouth_db"] - csv.loc["baseline", "psnr_outside_mouth_db"]
            )
        assert f"/runs/{runs[Path(csv.loc[trial, 'folder']).name].info.run_id})" in text  # linked to its run
    pngs = sorted((out / "report").glob("*.png"))
    assert {"fps.png", "stage_times.png", "speed_vs_quality.png", "memory.png", "frame_strip.png"} <= {
        p.name for p in pngs
    }
    for png in pngs:
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 100 and image.std() > 0, png
