"""`harness sweep --executor ray`: every trial a Ray task, on one machine's GPUs or on a cluster's.

Why it is built this way:
- A task asks for one GPU (and the node's CPUs shared out per GPU), or one CPU for a trial that runs on the CPU,
  and still runs its trial in a fresh process (harness.launcher), as the local executor does: clean peak-memory
  figures, no compiled graphs leaking between the trials one Ray worker process takes in turn.
- The trial runs in a scratch folder on its node; the folder comes back packed as the task's return value and
  is unpacked into the sweep folder here. Nodes need no shared filesystem, only this process writes the sweep
  folder, and MLflow is logged from that folder at the end as for a local sweep: one writer, so a sqlite store
  stays safe, and a tracking server needs to be reachable from this machine only.
- Inputs, and the baseline's output for the scores against it, are used in place where the node sees the same
  file (same path, size and mtime: one machine, a shared filesystem), else copied once per node from the object
  store; the baseline's recording of its generated region (metrics.generated_region) travels with its output.
  A trial that ran on a copy is recorded with this machine's paths and key, so resuming skips it.
- A task that fails, or whose worker or node is lost, gives a failed trial and the sweep goes on (no retries:
  re-running the sweep re-runs failed trials and skips finished ones, as always).
- Timed repeats are not interleaved: trials run side by side, each on its own GPU.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import CONFIG_FILE, TrialResult, load_trial, read_json, write_json_atomic
from harness.runner import failed_result
from harness.trial import Trial

log = logging.getLogger(__name__)

Job = tuple[Trial, Path, Path | None]  # trial, its folder here, the baseline output it is scored against


def import_ray() -> Any:
    """Ray, or an error saying how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError('--executor ray needs Ray: pip install -e ".[ray]"') from None
    return ray


@dataclass(frozen=True)
class _Shipped:
    """A file of this machine for a task on any node: where it is here, its stamp, and its bytes in the object
    store (inside a list, so the task gets the reference and the bytes move only to a node that needs them)."""

    path: str
    size: int
    mtime_ns: int
    ref: list


def _ship(ray: Any, path: str | Path) -> _Shipped:
    stat = Path(path).stat()
    return _Shipped(str(path), stat.st_size, stat.st_mtime_ns, [ray.put(Path(path).read_bytes())])


def _local_copy(ray: Any, shipped: _Shipped) -> Path:
    """The file on this node: in place if it is the same file, else a copy fetched once per node."""
    path = Path(shipped.path)
    if path.is_file() and (path.stat().st_size, path.stat().st_mtime_ns) == (shipped.size, shipped.mtime_ns):
        return path
    stamp = f"{shipped.path}:{shipped.size}:{shipped.mtime_ns}".encode()
    copy = (
        Path(tempfile.gettempdir()) / "harness-ray-files" / hashlib.sha256(stamp).hexdigest()[:16] / path.name
    )
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f".{copy.name}.{os.getpid()}")
        partial.write_bytes(ray.get(shipped.ref[0]))
        os.replace(partial, copy)
    return copy


def _pack(folder: str | Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def _recording_beside(ray: Any, reference: Path, recording: list | None) -> None:
    """The baseline's recording next to the node's copy of its output (in place already where it is the file)."""
    from metrics.generated_region import generated_dir

    folder = generated_dir(reference)
    if recording is None or folder.is_dir():
        return
    partial = folder.with_name(f".{folder.name}.{os.getpid()}")
    with tarfile.open(fileobj=io.BytesIO(ray.get(recording[0]))) as tar:
        tar.extractall(partial, filter="data")
    os.replace(partial, folder)


def _run_task(
    trial_data: dict, video: _Shipped, audio: _Shipped, baseline: _Shipped | None, recording: list | None
) -> bytes:
    """On a Ray worker: the trial in a fresh process in a scratch folder; returns the folder, packed."""
    import ray

    from harness.launcher import run_in_subprocess

    trial = Trial.from_dict(trial_data)
    trial.video, trial.audio = str(_local_copy(ray, video)), str(_local_copy(ray, audio))
    reference = _local_copy(ray, baseline) if baseline is not None else None
    if reference is not None:
        _recording_beside(ray, reference, recording)
    with tempfile.TemporaryDirectory(prefix="harness-trial-") as scratch:
        run_in_subprocess(trial, Path(scratch), baseline_output=reference)
        return _pack(scratch)


def _unpack(packed: bytes, folder: Path, trial: Trial) -> TrialResult:
    """Unpack a trial folder from its node; record it with this machine's input paths and trial key."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        tar.extractall(folder, filter="data")
    config = read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).exists() else None
    if config is not None and (config["video"], config["audio"]) != (trial.video, trial.audio):
        write_json_atomic(folder / CONFIG_FILE, {**config, "video": trial.video, "audio": trial.audio})
    result = load_trial(folder).result
    if result.key != trial.key():
        result.key = trial.key()
        result.write(folder)
    return result


def _resources(trial: Trial, cluster: dict[str, float]) -> dict[str, float] | None:
    """What one trial's task asks for: a GPU and the CPUs per GPU, or one CPU; None if nothing can run it."""
    device = trial.resolve().device
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 1.0)
    if device == "cpu" or (device == "auto" and not gpus):
        return {"num_cpus": 1, "num_gpus": 0}
    if not gpus:
        return None
    return {"num_cpus": max(1, int(cpus // gpus)), "num_gpus": 1}


def _submit(
    ray: Any, jobs: list[Job], shipped: dict[str, _Shipped]
) -> tuple[dict[Any, tuple[Trial, Path]], list[TrialResult]]:
    """Start a task per job; returns the tasks running and the trials no node can run (failed)."""
    from metrics.generated_region import generated_dir

    task = ray.remote(max_retries=0)(_run_task)
    recordings: dict[str, list | None] = {}
    cluster = ray.cluster_resources()
    pending: dict[Any, tuple[Trial, Path]] = {}
    unrunnable = []
    for trial, folder, reference in jobs:
        resources = _resources(trial, cluster)
        if resources is None:
            unrunnable.append(
                _failed(trial, folder, f"device {trial.resolve().device}: the Ray cluster has no GPU")
            )
            continue
        for path in (trial.video, trial.audio, reference):
            if path is not None and str(path) not in shipped and Path(path).is_file():
                shipped[str(path)] = _ship(ray, path)
        baseline = shipped.get(str(reference)) if reference is not None else None
        if reference is not None and str(reference) not in recordings:
            folder = generated_dir(Path(reference))
            recordings[str(reference)] = [ray.put(_pack(folder))] if folder.is_dir() else None
        recording = recordings.get(str(reference)) if reference is not None else None
        ref = task.options(**resources).remote(
            trial.to_dict(), shipped[trial.video], shipped[trial.audio], baseline, recording
        )
        pending[ref] = (trial, folder)
    return pending, unrunnable


def gather(ray: Any, pending: dict[Any, tuple[Trial, Path]]) -> list[TrialResult]:
    """Each task's trial folder as it finishes; a failed task or a lost worker or node gives a failed trial."""
    results = []
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        trial, folder = pending.pop(ref)
        try:
            result = _unpack(ray.get(ref), folder, trial)
        except ray.exceptions.RayError as exc:
            summary = (str(exc).strip().splitlines() or [""])[0]
            error = f"Ray task failed or lost: {type(exc).__name__}: {summary}"[:300]
            result = _failed(trial, folder, error, str(exc)[-3000:])
        log.info("trial %s: %s (%d still running)", trial.name, result.status, len(pending))
        results.append(result)
    return results


def _failed(trial: Trial, folder: Path, error: str, details: str = "") -> TrialResult:
    result = failed_result(trial, error, details)
    folder.mkdir(parents=True, exist_ok=True)
    result.write(folder)
    return result


def run_on_ray(jobs: list[Job], address: str | None = None) -> list[TrialResult]:
    """Run the jobs as Ray tasks: on the cluster at `address`, the one already joined, or a new local one.
    Baselines go first when other trials are compared with them (fidelity, scores); otherwise all go at once."""
    if not jobs:
        return []
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        # A new local instance needs no dashboard (seconds of start-up); a running cluster keeps its own.
        ray.init(address=address, **({} if address else {"include_dashboard": False}))
    log.info("Ray cluster: %s", ray.cluster_resources())
    try:
        needs_baseline = any(ref is not None and t.compare for t, _, ref in jobs)
        phases = (
            [[j for j in jobs if j[0].is_baseline], [j for j in jobs if not j[0].is_baseline]]
            if needs_baseline
            else [jobs]
        )
        shipped: dict[str, _Shipped] = {}
        results: list[TrialResult] = []
        for phase in phases:
            pending, unrunnable = _submit(ray, phase, shipped)
            results += unrunnable + gather(ray, pending)
        return results
    finally:
        if started:
            ray.shutdown()
