from pathlib import Path

import pytest

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
