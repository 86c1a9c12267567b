"""`torchrun --nproc-per-node 2 -m harness.cli run` on CPU (gloo): the same frames as one process."""

import json
import os
import subprocess
import sys

import numpy as np
import torch

from harness.config import RunConfig
from harness.pipeline.media import iter_frames

# Three 4-frame segments: rank 0 runs the first and the third, skipping the second (rank 1's), so its alignment
# smoothing and VAE sampling draws must carry over a group it did not encode.
SETTINGS = {
    "weights": "tiny",
    "device": "cpu",
    "steps": 1,
    "max_seconds": 0.48,
    "segment_frames": 4,
    "crf": 0,
}


def test_two_gloo_ranks_write_the_same_frames_as_one_process(tmp_path):
    from harness.pipeline.demo_clip import ensure_demo_clip
    from variants import load_pipeline

    video, audio = ensure_demo_clip()
    options = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + ["-m", "harness.cli", "run", *options, "--run-dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert ranks.returncode == 0, ranks.stdout[-2000:] + ranks.stderr[-3000:]
    assert not (tmp_path / "two" / "rank1" / "output.mp4").exists()  # rank 1 sent its frames to rank 0
    # gathering the ranks' frames is a stage of its own: timed, in the stage table and in what rank 0 prints
    gathered = json.loads((tmp_path / "two" / "result.json").read_text())["metrics"]["gather_s"]
    assert gathered > 0 and "| gather |" in (tmp_path / "two" / "stage_times.md").read_text()
    assert "| gather |" in ranks.stdout

    config = RunConfig(video=str(video), audio=str(audio), **SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: float sums then round the same way
    try:
        load_pipeline(config).run(video, audio, tmp_path / "one.mp4")
    finally:
        torch.set_num_threads(threads)
    one = np.stack(list(iter_frames(tmp_path / "one.mp4")))
    two = np.stack(list(iter_frames(tmp_path / "two" / "output.mp4")))
    assert one.shape == (12, 360, 360, 3)
    np.testing.assert_array_equal(two, one)


def test_a_skipped_segment_leaves_the_vae_generator_where_encoding_it_does(tiny_pipeline):
    # A rank skips the segments other ranks encode; its next segment's VAE sampling noise matches a single run's
    # only if skipping draws exactly what encoding draws (the gloo run above shows it end to end).
    from harness.pipeline.lipsync import NullTimer, _Segment

    pipeline = tiny_pipeline
    res = pipeline.config.resolution
    segment = _Segment(start=0, frames=[np.zeros((8, 8, 3), np.uint8)] * 3, sources=[0, 1, 2])
    segment.pixels = torch.rand(3, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1
    after = []
    for step in (lambda: pipeline._encode(segment, torch.zeros(3, 1), NullTimer()), lambda: pipeline._skip_encode(segment)):
        pipeline._rng = torch.Generator(device=pipeline.device).manual_seed(5)
        step()
        after.append(pipeline._rng.get_state())
    assert torch.equal(after[0], after[1])
    assert not torch.equal(after[0], torch.Generator(device=pipeline.device).manual_seed(5).get_state())
