"""`harness sweep --executor ray`: every trial a Ray task, on one machine's GPUs or on a cluster's.

Why it is built this way:
- A task asks for one GPU and its share of that GPU's node's CPUs (a node with 128 CPUs and 8 GPUs gives 16 per
  trial, one with 16 and 2 gives 8; Ray sets the task's OMP_NUM_THREADS from it): each task is placed on a node
  with a free GPU, sized for that node. A trial that runs on the CPU asks for one CPU. Either way it still runs in
  a fresh process (harness.launcher), as the local executor does: clean peak-memory figures, no compiled graphs
  leaking between the trials one Ray worker process takes in turn.
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
- Timed repeats are not interleaved: trials run side by side, each on its own GPU, so a speed ratio compares two
  GPUs too. The sweep records the executor (sweep.json) and each trial's host and GPU (`env.hostname`,
  `env.device_uuid`), and the report says so.
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
    """Unpack a trial folder from its node; record it with this machine's input paths and trial key, and that
    it ran side by side on Ray (tag `executor`)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        tar.extractall(folder, filter="data")
    config = read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).exists() else None
    if config is not None and (config["video"], config["audio"]) != (trial.video, trial.audio):
        write_json_atomic(folder / CONFIG_FILE, {**config, "video": trial.video, "audio": trial.audio})
    result = load_trial(folder).result
    result.key = trial.key()
    result.tags["executor"] = "ray"
    result.write(folder)
    return result


@dataclass(frozen=True)
class _Slot:
    """One GPU of the cluster: its node and the CPUs a trial on it asks for (the node's CPUs per GPU)."""

    node_id: str
    cpus: int


def gpu_slots(nodes: list[dict[str, Any]]) -> list[_Slot]:
    """A slot per GPU of every live node (`ray.nodes()`), each with its own node's CPUs per GPU."""
    slots = []
    for node in nodes:
        resources = node.get("Resources", {})
        gpus = int(resources.get("GPU", 0))
        if node.get("Alive") and gpus:
            slots += [_Slot(node["NodeID"], max(1, int(resources.get("CPU", 0) // gpus)))] * gpus
    return slots


def _on_gpu(trial: Trial, slots: list[_Slot]) -> bool | None:
    """Whether the trial needs a GPU slot; None when it does and the cluster has no GPU at all."""
    device = trial.resolve().device
    if device == "cpu" or (device == "auto" and not slots):
        return False
    return True if slots else None


def _options(slot: _Slot | None) -> dict[str, Any]:
    """The task's request: one GPU and that node's CPUs per GPU, pinned to the node; or one CPU, anywhere."""
    if slot is None:
        return {"num_cpus": 1, "num_gpus": 0}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(slot.node_id, soft=False)
    return {"num_cpus": slot.cpus, "num_gpus": 1, "scheduling_strategy": strategy}


def _run_phase(ray: Any, jobs: list[Job], shipped: dict[str, _Shipped]) -> list[TrialResult]:
    """Run the jobs as tasks, each GPU trial started when a GPU is free and sized for its node; results as they
    finish (a trial no node can run is failed at once)."""
    task = ray.remote(max_retries=0)(_run_task)
    free = gpu_slots(ray.nodes())
    slots = list(free)
    recordings: dict[str, list | None] = {}  # each baseline's recording of its generated region, shipped once
    waiting, pending, results = list(jobs), {}, []
    while waiting or pending:
        for job in list(waiting):
            trial, folder, reference = job
            on_gpu = _on_gpu(trial, slots)
            if on_gpu is None:
                error = f"device {trial.resolve().device}: the Ray cluster has no GPU"
                results.append(_failed(trial, folder, error))
            elif on_gpu and not free:
                continue  # every GPU is busy: it waits for one
            else:
                slot = free.pop(0) if on_gpu else None
                task_ref = _submit(ray, task, job, shipped, recordings, _options(slot))
                pending[task_ref] = (trial, folder, slot)
            waiting.remove(job)
        if pending:
            ref, result = finish_next(ray, pending)
            slot = pending.pop(ref)[2]
            if slot is not None:
                free.append(slot)
            results.append(result)
    return results


def _submit(
    ray: Any,
    task: Any,
    job: Job,
    shipped: dict[str, _Shipped],
    recordings: dict[str, list | None],
    options: dict[str, Any],
) -> Any:
    from metrics.generated_region import generated_dir

    trial, _, reference = job
    for path in (trial.video, trial.audio, reference):
        if path is not None and str(path) not in shipped and Path(path).is_file():
            shipped[str(path)] = _ship(ray, path)
    baseline = shipped.get(str(reference)) if reference is not None else None
    if reference is not None and str(reference) not in recordings:
        recording = generated_dir(Path(reference))
        recordings[str(reference)] = [ray.put(_pack(recording))] if recording.is_dir() else None
    recording_ref = recordings.get(str(reference)) if reference is not None else None
    return task.options(**options).remote(
        trial.to_dict(), shipped[trial.video], shipped[trial.audio], baseline, recording_ref
    )


def finish_next(ray: Any, pending: dict[Any, tuple]) -> tuple[Any, TrialResult]:
    """The next task to finish and its trial's result (pending: task -> (trial, its folder here, ...)); a failed
    task or a lost worker or node gives a failed trial."""
    [ref], _ = ray.wait(list(pending), num_returns=1)
    trial, folder = pending[ref][:2]
    try:
        result = _unpack(ray.get(ref), folder, trial)
    except ray.exceptions.RayError as exc:
        summary = (str(exc).strip().splitlines() or [""])[0]
        error = f"Ray task failed or lost: {type(exc).__name__}: {summary}"[:300]
        result = _failed(trial, folder, error, str(exc)[-3000:])
    log.info("trial %s: %s (%d still running)", trial.name, result.status, len(pending) - 1)
    return ref, result


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
        return [result for phase in phases for result in _run_phase(ray, phase, shipped)]
    finally:
        if started:
            ray.shutdown()
