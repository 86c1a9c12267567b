import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# One thread for torch's kernels in every test process and the trial processes they start (set before any test
# module imports torch): README's command runs two workers on two cores, and they must not fight over them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session", autouse=True)
def lean_diffusers() -> None:
    """diffusers as the harness's own processes import it (harness.models.lean_diffusers), in every test and
    whichever test loads a model first: the trial processes' configuration is the one tested, and each worker
    skips importing bitsandbytes, torchao and transformers' models through diffusers."""
    from harness.models.lean_diffusers import skip_unused_diffusers_integrations

    skip_unused_diffusers_integrations()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: with two xdist workers they start at once, beside the rest, instead of last on one
    worker while the other sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="module")
def tiny_pipeline():
    """Tiny weights on CPU over the demo clip's first 20 frames (a full 16-frame segment and a short one)."""
    from harness.config import RunConfig
    from harness.pipeline.demo_clip import ensure_demo_clip
    from variants import load_pipeline

    video, audio = ensure_demo_clip()
    config = RunConfig(
        video=str(video), audio=str(audio), weights="tiny", steps=1, device="cpu", max_seconds=0.8, crf=0
    )
    return load_pipeline(config)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, Path]:
    """Copies of the embedded demo clip's video and audio in a folder of the test module's own."""
    from harness.pipeline.demo_clip import ensure_demo_clip

    folder = tmp_path_factory.mktemp("media")
    video, audio = ensure_demo_clip()
    shutil.copy(video, folder / "in.mp4")
    shutil.copy(audio, folder / "speech.wav")
    return folder / "in.mp4", folder / "speech.wav"


@pytest.fixture
def stand_in_python(tmp_path, monkeypatch) -> Callable[[str], Path]:
    """Make sys.executable a shell script with the given body, for code that starts `sys.executable ...` child
    processes: the test decides what the child prints, leaves behind and how it dies."""

    def install(body: str) -> Path:
        script = tmp_path / "python"
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(script))
        return script

    return install
