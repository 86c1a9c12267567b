"""The README's main job: `harness sweep experiments/quickstart.yaml` on a fresh CPU machine, logged to the
default embedded MLflow store, then re-run skipping every finished trial."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.sweep import load_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


# The shipped file, cut to one 16-frame segment and one run (the cold run, no profiled pass) per trial, in one
# process: the fresh process per trial and the cProfile files are tested in test_sweep, the 2 s sync score in
# test_metrics_sync.
QUICK = ["--inline", "--set", "repeats=0", "--set", "profile=false", "--set", "base.max_seconds=0.64"]


def _sweep(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "sweep", str(QUICKSTART), "--out-dir", "out", *QUICK],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.mark.slow
def test_quickstart_sweep_logs_to_mlflow_and_skips_finished_trials(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = _sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = load_sweep(QUICKSTART).trials
    assert {t.name for t in trials} >= {"baseline", "threads2", "batch2", "no-guidance", "deepcache"}
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(table["trial"]) == sorted(t.name for t in trials)
    assert set(table["status"]) == {"ok"}, table[["trial", "status", "error"]]
    ok = table.set_index("trial")
    assert (ok["fps"] > 0).all() and (ok["denoise_s"] > 0).all() and (ok["peak_rss_mb"] > 0).all()
    # lossless variants reproduce the baseline (lossless output: crf 0); lossy ones do not
    assert ok.loc["threads2", "psnr_db"] > 45 and ok.loc["batch2", "psnr_db"] > 45
    assert ok.loc["whisper-int8", "psnr_db"] < ok.loc["batch2", "psnr_db"]
    assert set(ok.loc[["threads2", "batch2"], "fidelity_gate"]) == {"passed"}
    assert set(ok.loc[["no-guidance", "deepcache", "whisper-int8"], "fidelity_gate"]) == {"not applicable"}
    assert "psnr_outside_mouth_db" in ok.columns

    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == len(trials)
    child = next(r for r in children if r.info.run_name == "baseline")
    assert child.data.params["config.steps"] == "3" and child.data.metrics["fps"] > 0
    assert child.data.tags["weights.synthetic"] == "true"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"stage_times.md", "stage_times.png", "output.mp4"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert {"plots/fps.png", "plots/stage_times.png", "plots/speed_vs_quality.png"} <= plots

    again = _sweep(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipping finished trial") == len(trials)
    runs_after = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs_after) == len(runs)
