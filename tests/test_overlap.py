"""The pipelined run: its three overlapped stages, and its output against the serial run's, frame for frame."""

import dataclasses
import threading
import time

import numpy as np
import pytest

from harness.pipeline.media import iter_frames
from harness.pipeline.overlap import run_overlapped
from harness.trackers.timer import StageTimer


def _stage_threads():
    return [t for t in threading.enumerate() if t.name.startswith("stage-")]


def test_every_item_passes_each_stage_once_in_order_and_the_stages_overlap():
    seen = {"prepare": [], "middle": [], "finish": []}
    active = set()
    overlapped = []
    lock = threading.Lock()

    def stage(name, work_s):
        def run(item):
            with lock:
                active.add(name)
                overlapped.append(len(active))
            time.sleep(work_s)
            with lock:
                active.discard(name)
            seen[name].append(item)
            return item

        return run

    run_overlapped(range(12), stage("prepare", 0.01), stage("middle", 0.01), stage("finish", 0.01), depth=1)
    assert seen == {name: list(range(12)) for name in seen}
    assert max(overlapped) >= 2  # some stages ran at the same time
    assert not _stage_threads()


def test_worker_threads_run_on_the_callers_gpu(monkeypatch):
    """A new thread starts on GPU 0; under torchrun rank 1 drives GPU 1, and its prepare/finish threads must too.
    CUDA is stood in for (the CI machine has none): what is checked is which GPU each thread selects."""
    import contextlib

    import torch

    selected: dict[str, list] = {}

    class _Stub:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    def set_device(device):
        selected.setdefault(threading.current_thread().name, []).append(torch.device(device))

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "Stream", _Stub)
    monkeypatch.setattr(torch.cuda, "Event", _Stub)
    monkeypatch.setattr(torch.cuda, "stream", lambda _stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *_args: _Stub())
    out = []
    run_overlapped(range(3), lambda i: i, lambda i: i, out.append, device="cuda")
    assert out == [0, 1, 2]
    assert selected == {name: [torch.device("cuda", 1)] for name in ("stage-prepare", "stage-finish")}


def test_items_alive_at_once_stay_bounded_by_the_queue_depth():
    alive = 0
    most = 0
    lock = threading.Lock()

    def items():
        nonlocal alive, most
        for i in range(30):
            with lock:
                alive += 1
                most = max(most, alive)
            yield i

    def finish(_item):
        nonlocal alive
        time.sleep(0.005)  # the slowest stage: everything upstream backs up behind it
        with lock:
            alive -= 1

    run_overlapped(items(), lambda x: x, lambda x: x, finish, depth=1)
    assert alive == 0
    assert most <= 2 * 1 + 3


@pytest.mark.parametrize("failing", ["prepare", "middle", "finish"])
def test_an_error_in_any_stage_stops_the_others_and_reaches_the_caller(failing):
    calls = {"prepare": 0, "middle": 0, "finish": 0}

    def stage(name):
        def run(item):
            calls[name] += 1
            if name == failing and item == 3:
                raise RuntimeError(f"{name} broke on item {item}")
            return item

        return run

    with pytest.raises(RuntimeError, match=f"{failing} broke on item 3"):
        run_overlapped(range(1000), stage("prepare"), stage("middle"), stage("finish"), depth=1)
    assert calls["prepare"] < 1000  # the producer stopped instead of reading everything
    assert not _stage_threads()


def test_stage_timer_takes_stages_from_several_threads():
    timer = StageTimer("cpu")

    def work(name):
        for _ in range(3):
            with timer.stage(name), timer.stage(f"{name}.inner"):
                time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = timer.totals()
    assert set(totals) == {"a_s", "a.inner_s", "b_s", "b.inner_s"}
    assert totals["a.inner_s"] >= 0.03 and totals["b.inner_s"] >= 0.03
    assert totals["a_s"] < 0.01  # each thread's inner stage is charged to the inner stage only
    assert timer.counts() == {"a": 3, "a.inner": 3, "b": 3, "b.inner": 3}


def test_pipelined_output_equals_the_serial_output_frame_for_frame(tiny_pipeline, tmp_path):
    outputs, matrices, timers = {}, {}, {}
    for execution in ("serial", "pipelined"):
        # two segments per U-Net call, but a short segment goes alone: groups of 16 and of 4 frames
        config = tiny_pipeline.config.replace(execution=execution, segments_per_call=2)
        pipeline = dataclasses.replace(tiny_pipeline, config=config)
        timers[execution] = StageTimer("cpu")
        out = tmp_path / f"{execution}.mp4"
        run = pipeline.run(config.video, config.audio, out, timer=timers[execution])
        outputs[execution] = np.stack(list(iter_frames(out)))
        matrices[execution] = run.matrices
    assert outputs["serial"].shape == outputs["pipelined"].shape == (20, 360, 360, 3)
    np.testing.assert_array_equal(outputs["pipelined"], outputs["serial"])
    np.testing.assert_array_equal(matrices["pipelined"], matrices["serial"])
    # every stage is still timed, as often as in the serial run
    assert timers["pipelined"].counts() == timers["serial"].counts()
    assert all(seconds > 0 for seconds in timers["pipelined"].totals().values())
