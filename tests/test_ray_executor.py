"""`harness sweep --executor ray` on a two-CPU local Ray cluster: the same trials and results table as the
local executor, a lost worker gives a failed trial, and a re-run skips finished trials."""

import json
import os
import textwrap

import numpy as np
import pandas as pd
import pytest

from harness.sweep import load_sweep, run_sweep

# The quickstart sweep's structure (a baseline and a variant trial, each a fresh process), cut to one 8-frame
# segment and one run per trial so the two trials run at once, one per worker (each costs ~20 s here, mostly
# imports). Scores are left out: shipping the baseline's output for them is tested below on its own.
SWEEP = """
name: ray-small
base: {weights: tiny, resolution: 256, steps: 1, device: cpu, max_seconds: 0.32, crf: 0}
repeats: 0
warmup: 0
profile: false
score: false
trials:
  - name: baseline
  - name: no-guidance
    variants: {guidance: 1.0}
"""
SAME = ["trial", "status", "frames", "tier", "weights.synthetic"]


@pytest.fixture(scope="module")
def ray():
    if os.environ.get("CI") != "true":
        pytest.importorskip("ray", reason='pip install -e ".[ray]"')
    import ray
    import torch

    # One torch thread in every trial, in this process (the inline reference) and in the workers' trial
    # processes (which inherit this environment): the tiny outputs, and so the frames compared below, then do
    # not depend on how many threads split each sum, whatever the machine or OMP_NUM_THREADS of the test run.
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = omp


def _sweep(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    return load_sweep(path)


def test_a_ray_sweep_gives_the_local_sweeps_trials_table_and_outputs_and_resumes(ray, tmp_path, caplog):
    from harness.pipeline.media import iter_frames

    sweep = _sweep(tmp_path)
    # the local reference, in this process (the fresh process per trial is tested in test_sweep)
    run_sweep(sweep, tmp_path / "local", inline=True, log_mlflow=False)
    results = run_sweep(sweep, tmp_path / "ray", log_mlflow=False, executor="ray")
    assert sorted(r.trial for r in results) == ["baseline", "no-guidance"]
    local, remote = (pd.read_csv(tmp_path / d / "results.csv").sort_values("trial") for d in ("local", "ray"))
    assert set(remote["status"]) == {"ok"}, remote[["status", "error"]]
    pd.testing.assert_frame_equal(local[SAME].reset_index(drop=True), remote[SAME].reset_index(drop=True))
    folders = sorted(p.name for p in (tmp_path / "ray" / "trials").iterdir())
    assert folders == sorted(p.name for p in (tmp_path / "local" / "trials").iterdir())
    for name in folders:
        frames = [
            np.stack(list(iter_frames(tmp_path / d / "trials" / name / "output.mp4")))
            for d in ("local", "ray")
        ]
        np.testing.assert_array_equal(*frames)

    with caplog.at_level("INFO", logger="harness.sweep"):
        again = run_sweep(sweep, tmp_path / "ray", log_mlflow=False, executor="ray")
    assert len(again) == 2 and caplog.text.count("skipping finished trial") == 2
    info = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert (
        info["executor"] == "ray" and "--executor ray" in info["command"]
    )  # the report's command reproduces it
    assert set(remote["executor"]) == {"ray"} and "executor" not in local.columns
    assert "env.hostname" in remote.columns and "env.device" in remote.columns  # where each trial ran


def test_a_file_is_used_in_place_on_its_machine_and_copied_once_to_another(ray, tmp_path):
    from harness.ray_executor import _local_copy, _ship

    path = tmp_path / "baseline.mp4"
    path.write_bytes(b"frames")
    shipped = _ship(ray, path)
    assert _local_copy(ray, shipped) == path
    path.write_bytes(b"other frames")  # as another node sees it: not the same file
    copy = _local_copy(ray, shipped)
    assert copy != path and copy.read_bytes() == b"frames" and _local_copy(ray, shipped) == copy


def test_a_lost_worker_marks_its_trial_failed(ray, tmp_path):
    from harness.ray_executor import finish_next

    trial = _sweep(tmp_path).trials[0]
    crash = ray.remote(max_retries=0)(lambda: os._exit(1)).remote()  # the worker process dies mid-task
    ref, result = finish_next(ray, {crash: (trial, tmp_path / "t", None)})
    assert ref == crash
    assert result.status == "failed" and "Ray task failed or lost: WorkerCrashedError" in result.error
    assert (tmp_path / "t" / "result.json").exists()


def test_each_gpu_task_asks_for_its_own_nodes_cpus_per_gpu():
    from harness.ray_executor import gpu_slots

    nodes = [
        {"NodeID": "head", "Alive": True, "Resources": {"CPU": 4.0}},
        {"NodeID": "big", "Alive": True, "Resources": {"CPU": 128.0, "GPU": 8.0}},
        {"NodeID": "small", "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
        {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 64.0, "GPU": 4.0}},
    ]
    slots = gpu_slots(nodes)
    # by the cluster's totals (148 CPUs / 10 GPUs) every task would ask for 14: the small node could take one
    assert [(s.node_id, s.cpus) for s in slots] == [("big", 16)] * 8 + [("small", 8)] * 2
