from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: with two xdist workers they start at once, beside the rest, instead of last on one
    worker while the other sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
