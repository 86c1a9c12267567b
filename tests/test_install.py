"""The environment the README's install makes: one OpenCV, with what the harness's code calls."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def _cv2_names_used() -> set[str]:
    names: set[str] = set()
    for folder in ("harness", "metrics", "variants", "reports"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\bcv2\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    return names


def test_the_cv2_in_use_has_everything_the_code_calls():
    used = _cv2_names_used()
    assert {"warpAffine", "resize", "getRotationMatrix2D"} <= used  # the scan finds the calls
    missing = sorted(name for name in used if not hasattr(cv2, name))
    assert not missing, f"cv2 {cv2.__version__} at {cv2.__file__} lacks {missing}"


def test_one_distribution_provides_cv2():
    providers = sorted(set(metadata.packages_distributions().get("cv2", [])))
    assert len(providers) == 1, (
        f"{providers} all install the cv2 package and overwrite each other's files; keep one "
        "(README, Set up: InsightFace goes in with --no-deps; to repair: pip uninstall -y opencv-python "
        "opencv-python-headless opencv-contrib-python && pip install --force-reinstall --no-deps opencv-contrib-python)"
    )


def test_ci_runs_the_readmes_test_command():
    """README's second command (install the extras and the parity packages, run the tests) is what .ci/run runs,
    word for word, with only CI's own additions after it."""
    commands = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    readme = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"\n{readme} --durations=10\n" in ci
