"""A sweep folder reaches MLflow as one parent and one child per trial, checked through a real server's REST
API; logging again adds no children; the default store is an embedded SQLite file in the working folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.results import SWEEP_PLOTS_DIR, TrialResult, collect_results, write_json_atomic
from harness.stages import STAGES
from harness.tracking import log_sweep, resolve_tracking, sanitize_key
from reports.plots import sweep_plots

SERVER_START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, endpoint: str, **query: str) -> dict[str, Any]:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log_path = root / "server.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'db.sqlite'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(root / "art"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its workers end with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server not up after {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def make_sweep(root: Path) -> Path:
    """A finished sweep as the runner leaves it: sweep.json, three trial folders (one with a profile table)
    and a fourth whose result.json is torn."""
    sweep = root / "sweep"
    write_json_atomic(
        sweep / "sweep.json", {"name": "speed", "file": "experiments/speed.yaml", "baseline": "base"}
    )
    trials = [
        TrialResult(
            trial="base",
            status="ok",
            key="aaa111",
            params={"config.steps": 20, "config.guidance": 1.5},
            metrics={"denoise_s": 2.5, "cold_denoise_s": 4.0, "fps": 10.0, "rtf": 0.4, "peak_rss_mb": 812.5},
            tags={"env.git_commit": "0123abc", "env.device_name": "AMD EPYC", "weights.synthetic": "true"},
            artifacts=["profile_top30.txt", "output.mp4"],  # the video was deleted: not logged
            wall_s=12.0,
        ),
        TrialResult(
            trial="steps=10",
            status="failed",
            key="bbb222",
            variants={"steps": 10},
            params={"variant.steps": 10, "odd key (ms)": "x"},
            error="RuntimeError: boom",
            traceback="Traceback ...",
            wall_s=1.0,
        ),
        TrialResult(
            trial="fp16", status="skipped", key="ccc333", variants={"precision": "fp16"}, reason="needs a GPU"
        ),
    ]
    for result in trials:
        folder = sweep / "trials" / f"{result.trial.replace('=', '_')}-{result.key}"
        write_json_atomic(folder / "config.json", {"steps": 20, "extras": {"cache": {"interval": 3}}})
        result.write(folder)
    (sweep / "trials" / "base-aaa111" / "profile_top30.txt").write_text("ncalls tottime cumtime\n")
    (sweep / "trials" / "torn-ddd444").mkdir()
    (sweep / "trials" / "torn-ddd444" / "result.json").write_text("{")  # unreadable: left out, not fatal
    sweep_plots(collect_results(sweep), sweep / SWEEP_PLOTS_DIR, STAGES, baseline="base")
    return sweep


def _children(base: str, experiment_id: str, parent_id: str) -> list[dict[str, Any]]:
    body = {"experiment_ids": [experiment_id], "filter": f"tags.`mlflow.parentRunId` = '{parent_id}'"}
    return _post(base, "/api/2.0/mlflow/runs/search", body).get("runs", [])


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_log_sweep_to_a_server_then_relog_adds_no_children(mlflow_server: str, tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    parent_id = log_sweep(sweep, "harness-test", tracking_uri=mlflow_server)

    experiment = _get(
        mlflow_server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="harness-test"
    )
    experiment_id = experiment["experiment"]["experiment_id"]
    parent = _get(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=parent_id)["run"]
    assert _tags(parent)["harness.sweep"] == "speed" and _tags(parent)["weights.synthetic"] == "true"
    parent_metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert parent_metrics["trials"] == 3 and parent_metrics["trials_failed"] == 1
    plots = _get(mlflow_server, "/api/2.0/mlflow/artifacts/list", run_id=parent_id, path=SWEEP_PLOTS_DIR)
    assert {f["path"] for f in plots["files"]} >= {"plots/fps.png"}

    children = _children(mlflow_server, experiment_id, parent_id)
    by_name = {_tags(run)["mlflow.runName"]: run for run in children}
    assert sorted(by_name) == ["base", "fp16 [precision=fp16]", "steps=10"]  # names carry variant values

    base = _get(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=by_name["base"]["info"]["run_id"])["run"]
    params = {p["key"]: p["value"] for p in base["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in base["data"]["metrics"]}
    tags = _tags(base)
    assert params["config.steps"] == "20" and params["config.extras.cache.interval"] == "3"
    assert metrics["denoise_s"] == 2.5 and metrics["cold_denoise_s"] == 4.0 and metrics["wall_s"] == 12.0
    assert tags["status"] == "ok" and tags["env.git_commit"] == "0123abc"
    assert tags["weights.synthetic"] == "true" and "SYNTHETIC" in tags["mlflow.note.content"]
    assert base["info"]["status"] == "FINISHED"
    listed = _get(mlflow_server, "/api/2.0/mlflow/artifacts/list", run_id=base["info"]["run_id"])
    assert {f["path"] for f in listed["files"]} == {"config.json", "profile_top30.txt", "result.json"}

    failed = by_name["steps=10"]
    assert failed["info"]["status"] == "FAILED" and _tags(failed)["error"] == "RuntimeError: boom"
    assert {p["key"] for p in failed["data"]["params"]} >= {"variant.steps", "odd_key__ms_"}
    assert _tags(by_name["fp16 [precision=fp16]"])["skip_reason"] == "needs a GPU"

    assert log_sweep(sweep, "harness-test", tracking_uri=mlflow_server) == parent_id
    assert len(_children(mlflow_server, experiment_id, parent_id)) == 3

    # A trial re-run with a new result replaces its child instead of adding one.
    folder = sweep / "trials" / "steps_10-bbb222"
    TrialResult(trial="steps=10", status="ok", key="bbb222", metrics={"denoise_s": 1.2}).write(folder)
    log_sweep(sweep, "harness-test", tracking_uri=mlflow_server)
    children = _children(mlflow_server, experiment_id, parent_id)
    assert len(children) == 3
    rerun = next(r for r in children if _tags(r)["mlflow.runName"] == "steps=10")
    assert _tags(rerun)["status"] == "ok" and rerun["info"]["status"] == "FINISHED"


def test_default_store_is_sqlite_and_mlartifacts_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    sweep = make_sweep(tmp_path)
    parent_id = log_sweep(sweep, "embedded")

    assert (workdir / "mlflow.db").is_file()
    assert not (workdir / "mlruns").exists()
    assert any(p.name == "profile_top30.txt" for p in (workdir / "mlartifacts").rglob("*"))
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("embedded")
    assert experiment.artifact_location == (workdir / "mlartifacts").as_uri()
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(run.info.run_name for run in children) == ["base", "fp16 [precision=fp16]", "steps=10"]


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts = resolve_tracking(workdir=tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert artifacts == (tmp_path.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking(workdir=tmp_path) == ("http://tracking.example:5000", None)
    assert resolve_tracking("sqlite:////data/x.db", tmp_path) == (
        "sqlite:////data/x.db",
        "file:///data/mlartifacts",
    )


def test_sanitize_key() -> None:
    assert sanitize_key("config.extras.cache") == "config.extras.cache"
    assert sanitize_key("odd key (ms)") == "odd_key__ms_"
    assert sanitize_key("../up") == "_.._up"
    assert len(sanitize_key("k" * 400)) == 250
