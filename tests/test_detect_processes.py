"""Face detection in worker processes (`detect_processes`): the same faces and the same output as in-process."""

import dataclasses
import functools

import numpy as np
import pytest

from harness.pipeline.detect_processes import DetectorProcesses
from harness.pipeline.faces import load_detector
from harness.pipeline.media import iter_frames


def test_a_run_detecting_in_two_processes_writes_the_same_frames(tiny_pipeline, tmp_path):
    outputs, matrices = {}, {}
    for processes in (0, 2):
        config = tiny_pipeline.config.replace(detect_processes=processes, execution="pipelined")
        pipeline = dataclasses.replace(tiny_pipeline, config=config)
        out = tmp_path / f"{processes}.mp4"
        run = pipeline.run(config.video, config.audio, out)
        outputs[processes] = np.stack(list(iter_frames(out)))
        matrices[processes] = run.matrices
        if processes:
            assert pipeline._detect_workers is not None  # kept for the pipeline's next run
            pipeline._detect_workers.close()
    assert outputs[0].shape == (20, 360, 360, 3)
    assert not np.isnan(matrices[0]).any()  # every frame had a face: detection really ran
    np.testing.assert_array_equal(outputs[2], outputs[0])
    np.testing.assert_array_equal(matrices[2], matrices[0])


def test_worker_faces_equal_in_process_faces_and_the_frame_file_is_removed(tiny_pipeline):
    from pathlib import Path

    frames = [frame for _, frame in zip(range(6), iter_frames(tiny_pipeline.config.video), strict=False)]
    detector = load_detector("mediapipe")
    here = [detector.detect(frame) for frame in frames]
    workers = DetectorProcesses(functools.partial(load_detector, "mediapipe"), 2)
    try:
        there = workers.detect(frames) + workers.detect(frames[:2])  # a smaller batch reuses the file
        path = Path(workers._path)
        assert path.exists()
    finally:
        workers.close()
    assert not path.exists()
    assert all(face is not None for face in here)
    for a, b in zip(here + here[:2], there, strict=True):
        np.testing.assert_array_equal(a.points3, b.points3)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_a_detector_that_cannot_load_in_a_worker_says_why(tmp_path):
    workers = DetectorProcesses(functools.partial(load_detector, "buffalo_l", root=str(tmp_path)), 1)
    try:
        with pytest.raises(FileNotFoundError, match="buffalo_l"):
            workers.detect([np.zeros((64, 64, 3), np.uint8)])
    finally:
        workers.close()
    with pytest.raises(ValueError, match="at least 1"):
        DetectorProcesses(functools.partial(load_detector, "mediapipe"), 0)
