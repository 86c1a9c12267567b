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

    _check_report(tmp_path / "out", client, children)

    again = _sweep(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipping finished trial") == len(trials)
    runs_after = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs_after) == len(runs)


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
        # with the CI's single cold run there is no spread to judge by: never a verdict
        assert row["speed_verdict"] == ("baseline" if trial == "baseline" else "not distinguishable")
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
