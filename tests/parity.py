"""Runs reference metric code (tests/parity_reference.py) in a child process with the reference packages.

They are installed apart from the project, `uv pip install --no-deps --target .venv/parity -r
tests/parity-requirements.txt` (.ci/run does it), because torchvision, which they import, must stay out of
the project's environment (see parity_reference.py). Without that folder the parity tests are skipped, except
in CI, where they fail, so a missing install step cannot pass unseen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARITY_SITE = ROOT / ".venv" / "parity"
INSTALL = "uv pip install --no-deps --target .venv/parity -r tests/parity-requirements.txt"


def run_reference(task: str, workdir: Path, env: dict[str, str] | None = None, **spec: object) -> dict:
    """The results of `task` in parity_reference.py for `spec`, run with the reference packages on the path."""
    if not (PARITY_SITE / "torchvision").is_dir():
        message = f"reference packages not installed at {PARITY_SITE}: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    request, answer = workdir / f"{task}-in.json", workdir / f"{task}-out.json"
    request.write_text(json.dumps(spec))
    child_env = {**os.environ, "PYTHONPATH": str(PARITY_SITE), **(env or {})}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("parity_reference.py")), task, str(request), str(answer)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"reference {task} failed:\n{done.stderr[-3000:]}")
    return json.loads(answer.read_text())
