"""The MLflow sink: a finished sweep folder (see harness.results) becomes one parent run with one nested
child run per trial.

Where it goes, first match wins: the `tracking_uri` argument, then `MLFLOW_TRACKING_URI`, then an embedded
store in the working folder, `sqlite:///<workdir>/mlflow.db` with artifacts in `<workdir>/mlartifacts`
(never `./mlruns`). Open the embedded store with

    mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db

(artifacts are found through each experiment's artifact location, so no artifact option is needed).

Runs: the parent is tagged `harness.sweep` (name) and `harness.sweep_hash` (sweep.json plus the folder's
absolute path); each child is named after its trial and its variant values (`threads2 [threading=2]`), carries
its speed ratio to the baseline (metrics `speedup_x`, `_low`, `_high`; tags `speed_verdict`, `machine_busy`,
from speed_ratios.json) and is tagged `harness.trial_id` (its folder name,
`<trial>-<trial hash>`, unique in the sweep), `harness.trial_key` (the hash) and `harness.result_digest`
(a hash of its result.json). Logging the same sweep again reuses the parent, skips children whose
result.json is unchanged, replaces (deletes, then logs anew) those that changed, e.g. a failed trial
that was re-run, and deletes those whose folder the sweep set aside as stale. `<sweep>/mlflow_runs.json` records each trial's run id for the report's links. Only the sweep
process writes here; trial processes write JSON files only.

A sweep checks the store before its first trial (`check_reachable`: a server gets one request with a 5 s
timeout, no retries) and logs with bounded retries (`HTTP_LIMITS`, where the environment sets none), so a dead
server costs seconds, not MLflow's default of minutes per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest.mock import patch

from harness.noise import read_speed_ratios
from harness.results import (
    CONFIG_FILE,
    RESULT_FILE,
    RUNS_FILE,
    STATUSES,
    SWEEP_FILE,
    SWEEP_PLOTS_DIR,
    TRIALS_DIR,
    ResultsError,
    TrialRecord,
    read_json,
    readable_trials,
    write_json_atomic,
)

log = logging.getLogger(__name__)

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# The smallest limits of MLflow servers in use (newer ones allow longer values): respected everywhere.
PARAM_VALUE_MAX = 500
TAG_VALUE_MAX = 5000
KEY_MAX = 250
# Per-call limits of log_batch.
BATCH_PARAMS_TAGS = 100
BATCH_METRICS = 1000
TRIAL_LOG_FILE = "trial.log"
STORE_LOCK_WAIT_S = 600.0  # another sweep logging to the same SQLite store is waited for this long
# From speed_ratios.json: the verdict and the busy flag are tags (filterable in the UI), the figures metrics.
SPEED_TAGS = (
    "speed_verdict",
    "speed_verdict_reason",
    "speed_baseline",
    "speed_paired",
    "machine_busy",
    "machine_busy_reason",
    "gpu_power_limited",
)
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
# MLflow's own defaults retry a dead server 7 times with doubling waits, each request up to 120 s: minutes.
# Ours, where the environment sets none: at most 3 tries of 15 s of silence each (a long upload that keeps
# moving is not cut).
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
REACH_TIMEOUT_S = 5


class TrackingUnreachable(ValueError):
    """The MLflow store cannot be reached (or written); nothing was logged."""


def resolve_tracking(
    tracking_uri: str | None = None, workdir: str | Path | None = None
) -> tuple[str, str | None]:
    """(tracking URI, artifact location for experiments this module creates).

    The artifact location is None for servers, which decide it themselves; for a SQLite store it is the
    `mlartifacts` folder beside the database.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        uri = f"sqlite:///{Path(workdir or Path.cwd()).resolve() / DB_FILE}"
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        return uri, (db.parent / ARTIFACTS_DIR).as_uri()
    return uri, None


def bounded_http() -> Any:
    """A block in which MLflow requests give up after HTTP_LIMITS (unless the environment sets its own)."""
    return _http_limits(HTTP_LIMITS)


def _http_limits(limits: Mapping[str, str], override: bool = False) -> Any:
    """MLflow reads these variables at each request; set for the block (over the user's only if `override`)."""
    return patch.dict(os.environ, {k: v for k, v in limits.items() if override or k not in os.environ})


def check_reachable(tracking_uri: str | None = None, workdir: str | Path | None = None) -> str:
    """Before a sweep's first trial: the store's URI if it can be logged to; else TrackingUnreachable saying
    why and what to do. A server gets one request (REACH_TIMEOUT_S, no retries); for the SQLite store, its
    folder must take files (the database itself is created under the store's lock when logging)."""
    uri, _ = resolve_tracking(tracking_uri, workdir)
    later = (
        "or run with --no-mlflow now and log the finished trials later with `harness sweep FILE --log-only`"
    )
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise TrackingUnreachable(
                f"MLflow store {uri}: cannot write in {folder} ({exc.strerror}); set MLFLOW_TRACKING_URI "
                f"to a store this process can write, {later}"
            ) from None
        return uri
    from mlflow.tracking import MlflowClient

    limits = {
        **HTTP_LIMITS,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REACH_TIMEOUT_S),
    }
    try:
        with _http_limits(limits, override=True):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure here means the trials' results could not be logged
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingUnreachable(
            f"MLflow tracking store {uri} cannot be reached ({reason}); start it or set MLFLOW_TRACKING_URI to "
            f"one that answers, {later}"
        ) from None
    return uri


def sanitize_key(key: str) -> str:
    """An MLflow-safe param/metric/tag key: other characters become '_', no leading '.', at most 250."""
    clean = _BAD_KEY_CHARS.sub("_", str(key)) or "_"
    if clean.startswith("."):
        clean = "_" + clean
    return clean[:KEY_MAX]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _text(value: Any, limit: int) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)[:limit]


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers only: MLflow stores NaN, but not every client or chart handles it."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[sanitize_key(key)] = float(value)
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _log_batch(
    client: Any,
    run_id: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    timestamp_ms: int,
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    param_list = [Param(sanitize_key(k), _text(v, PARAM_VALUE_MAX)) for k, v in params.items()]
    param_list = list({p.key: p for p in param_list}.values())  # two keys may sanitise alike
    tag_list = [RunTag(sanitize_key(k), _text(v, TAG_VALUE_MAX)) for k, v in tags.items()]
    metric_list = [Metric(k, v, timestamp_ms, 0) for k, v in metrics.items()]
    for chunk in _chunks(param_list, BATCH_PARAMS_TAGS):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tag_list, BATCH_PARAMS_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks(metric_list, BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)


def _search(client: Any, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _experiment_id(client: Any, name: str, artifact_location: str | None, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location)
    if artifact_location and experiment.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        log.warning(
            "MLflow experiment %r keeps its artifacts in %s (set when it was created), not %s",
            name,
            experiment.artifact_location,
            artifact_location,
        )
    if experiment.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted in {uri}; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or choose another name"
        )
    return experiment.experiment_id


def _digest(path: Path, speed: Mapping[str, Any]) -> str:
    """Of result.json and the trial's speed entry (which changes when its baseline is re-run)."""
    payload = path.read_bytes() + json.dumps(speed, sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def run_name(record: TrialRecord) -> str:
    """The trial's name, with its variant values when the name does not already spell them out."""
    values = ",".join(f"{k}={v}" for k, v in record.result.variants.items())
    name = record.result.trial
    return f"{name} [{values}]" if values and values not in name else name


def _sweep_info(sweep_dir: Path) -> tuple[dict[str, Any], str]:
    info = read_json(sweep_dir / SWEEP_FILE) if (sweep_dir / SWEEP_FILE).exists() else {}
    info.setdefault("name", sweep_dir.name)
    identity = json.dumps({"sweep": info, "dir": str(sweep_dir)}, sort_keys=True, default=str)
    return info, hashlib.sha256(identity.encode()).hexdigest()[:12]


def _time_ms(record: TrialRecord) -> tuple[int, int]:
    """(start, end) of the trial: result.json is written when it ends; wall_s says how long it took."""
    end = int((record.folder / RESULT_FILE).stat().st_mtime * 1000)
    return end - int((record.result.wall_s or 0) * 1000), end


def _log_files(client: Any, run_id: str, folder: Path, files: Iterable[Path]) -> None:
    for path in dict.fromkeys(files):
        relative = path.relative_to(folder).parent.as_posix()
        client.log_artifact(run_id, str(path), artifact_path=None if relative == "." else relative)


def _log_child(
    client: Any,
    experiment_id: str,
    parent_id: str,
    sweep_name: str,
    record: TrialRecord,
    digest: str,
    speed: Mapping[str, Any],
) -> str:
    r = record.result
    start, end = _time_ms(record)
    tags: dict[str, Any] = {
        "mlflow.parentRunId": parent_id,
        "harness.role": "trial",
        "harness.sweep": sweep_name,
        "harness.trial_id": record.folder.name,
        "harness.trial_key": r.key,
        "harness.result_digest": digest,
        "status": r.status,
    }
    tags.update(r.tags)
    tags.update({k: speed[k] for k in SPEED_TAGS if speed.get(k)})
    if r.reason:
        tags["skip_reason"] = r.reason
    if r.error:
        tags["error"] = r.error
    if str(r.tags.get("weights.synthetic", "")).lower() == "true":
        tags["mlflow.note.content"] = (
            "SYNTHETIC WEIGHTS: random values, not the LatentSync checkpoint. Timings hold; "
            "scores and the output video mean nothing."
        )
    # The config comes from config.json alone (result.json's params hold the variant values, not a copy).
    params = {**flatten(record.config, "config."), **flatten(r.params)}
    metrics = _numeric(r.metrics)
    metrics.update(_numeric({k: v for k, v in speed.items() if k not in SPEED_TAGS}))
    if r.wall_s is not None:
        metrics.update(_numeric({"wall_s": r.wall_s}))
    run = client.create_run(experiment_id, start_time=start, run_name=run_name(record))
    run_id = run.info.run_id
    _log_batch(client, run_id, params, metrics, tags, end)
    files = [record.folder / name for name in (RESULT_FILE, CONFIG_FILE, TRIAL_LOG_FILE)]
    _log_files(client, run_id, record.folder, [p for p in files if p.is_file()] + record.artifact_files())
    client.set_terminated(run_id, status="FAILED" if r.status == "failed" else "FINISHED", end_time=end)
    return run_id


def _not_logged(folder: Path, error: ResultsError) -> None:
    log.warning("MLflow: not logging %s: %s", folder.name, error)


def log_sweep(
    sweep_dir: str | Path,
    experiment_name: str,
    tracking_uri: str | None = None,
    workdir: str | Path | None = None,
) -> str:
    """Log a sweep folder to MLflow (see the module docstring); returns the parent run's id.

    `workdir` holds the embedded store when no URI is given (default: the current folder).
    """
    sweep_dir = Path(sweep_dir).resolve()
    uri, artifact_location = resolve_tracking(tracking_uri, workdir)
    with _store_lock(uri), bounded_http():
        return _log_sweep(sweep_dir, experiment_name, uri, artifact_location)


def _store_lock(uri: str) -> Any:
    """For a SQLite store, one harness process at a time: two creating a fresh store's schema at once crash one
    ('duplicate column name'), and SQLite serialises writers anyway. Servers handle concurrency themselves."""
    from contextlib import nullcontext

    from harness.folder_lock import FolderLock

    if not uri.startswith("sqlite:///"):
        return nullcontext()
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return FolderLock(
        db.parent, what=f"MLflow logging to {db}", wait_s=STORE_LOCK_WAIT_S, name=f".{db.name}.lock"
    )


def _close_killed(client: Any, runs: list) -> list:
    """Runs left RUNNING by a killed sweep are closed as KILLED and deleted (a trial logged again must appear
    once under its parent); returns the runs still active."""
    active = []
    for run in runs:
        if run.info.status == "RUNNING":
            log.warning(
                "MLflow: run %s was left RUNNING by an interrupted sweep; closing it as KILLED",
                run.info.run_id,
            )
            client.set_terminated(run.info.run_id, status="KILLED")
            client.delete_run(run.info.run_id)
        else:
            active.append(run)
    return active


def _log_sweep(sweep_dir: Path, experiment_name: str, uri: str, artifact_location: str | None) -> str:
    from mlflow.tracking import MlflowClient

    records = readable_trials(sweep_dir, _not_logged)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, experiment_name, artifact_location, uri)
    info, sweep_hash = _sweep_info(sweep_dir)
    sweep_name = str(info["name"])

    parents = _search(
        client, experiment_id, f"tags.`harness.sweep_hash` = '{sweep_hash}' and tags.`harness.role` = 'sweep'"
    )
    times = [_time_ms(r) for r in records] or [(int(time.time() * 1000),) * 2]
    if parents:
        parent_id = parents[0].info.run_id
        if parents[0].info.status == "RUNNING":  # an interrupted logging; finished below
            client.set_terminated(parent_id, status="KILLED")
        log.info("MLflow: sweep %s already has parent run %s; adding what is new", sweep_name, parent_id)
    else:
        parent_id = client.create_run(
            experiment_id, start_time=min(t[0] for t in times), run_name=sweep_name
        ).info.run_id

    children = {
        run.data.tags.get("harness.trial_id"): run
        for run in _close_killed(
            client, _search(client, experiment_id, f"tags.`mlflow.parentRunId` = '{parent_id}'")
        )
    }
    logged = skipped = 0
    speed = read_speed_ratios(sweep_dir)
    run_ids: dict[str, str] = {}
    for record in records:
        entry = speed.get(record.result.trial, {})
        digest = _digest(record.folder / RESULT_FILE, entry)
        existing = children.get(record.folder.name)
        if existing is not None and existing.data.tags.get("harness.result_digest") == digest:
            skipped += 1
            run_ids[record.result.trial] = existing.info.run_id
            continue
        if existing is not None:
            client.delete_run(existing.info.run_id)
        run_ids[record.result.trial] = _log_child(
            client, experiment_id, parent_id, sweep_name, record, digest, entry
        )
        logged += 1
    for trial_id, run in children.items():
        if trial_id and not (sweep_dir / TRIALS_DIR / trial_id).exists():  # set aside as stale by the sweep
            client.delete_run(run.info.run_id)
            log.info(
                "MLflow: deleted run %s of %s, whose folder is no longer the sweep's",
                run.info.run_id,
                trial_id,
            )
    write_json_atomic(
        sweep_dir / RUNS_FILE,
        {"tracking_uri": uri, "experiment_id": experiment_id, "parent_run_id": parent_id, "runs": run_ids},
    )

    counts = {f"trials_{s}": sum(r.result.status == s for r in records) for s in STATUSES}
    counts["trials"] = len(records)
    first_env = records[0].result.tags if records else {}
    parent_tags = {
        "harness.role": "sweep",
        "harness.sweep": sweep_name,
        "harness.sweep_hash": sweep_hash,
        "harness.sweep_dir": str(sweep_dir),
        **{
            k: v
            for k, v in first_env.items()
            if k in ("env.git_commit", "env.git_dirty", "env.device_name", "env.hostname")
        },
    }
    if any(str(r.result.tags.get("weights.synthetic", "")).lower() == "true" for r in records):
        parent_tags["weights.synthetic"] = "true"
    _log_batch(
        client, parent_id, flatten(info, "sweep."), _numeric(counts), parent_tags, max(t[1] for t in times)
    )
    sweep_files = [
        p
        for p in sorted(sweep_dir.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name != DB_FILE
    ]
    sweep_files += sorted((sweep_dir / SWEEP_PLOTS_DIR).glob("*.png"))
    _log_files(client, parent_id, sweep_dir, sweep_files)
    client.set_terminated(parent_id, status="FINISHED", end_time=max(t[1] for t in times))
    log.info(
        "MLflow %s: sweep %s, parent run %s, %d trial run(s) logged, %d unchanged",
        uri,
        sweep_name,
        parent_id,
        logged,
        skipped,
    )
    return parent_id
