"""Each trial in a fresh process: clean peak-memory figures, and no compiled graphs, patched modules or
quantized weights leaking into the next trial. The result (or the traceback) comes back through result.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.results import RESULT_FILE, TrialResult, load_trial
from harness.runner import failed_result
from harness.trial import Trial


def run_in_subprocess(
    trial: Trial, folder: Path, baseline_output: Path | None, timeout_s: float | None = None
) -> TrialResult:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "trial.json"
    spec.write_text(json.dumps({"trial": trial.to_dict(), "baseline_output": str(baseline_output or "")}))
    log_path = folder / "trial.log"
    with open(log_path, "w") as log_file:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "harness.launcher", str(spec)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
            code: Any = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout_s} s"
    result_path = folder / RESULT_FILE
    if result_path.exists():
        result = load_trial(folder).result
        if result.key == trial.key():
            return result
    result = failed_result(
        trial, f"trial process ended ({code}) without a result", log_path.read_text()[-3000:]
    )
    result.write(folder)
    return result


def main(argv: list[str]) -> int:
    import logging

    from harness.runner import run_trial

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(argv[0]).read_text())
    trial = Trial.from_dict(spec["trial"])
    baseline = Path(spec["baseline_output"]) if spec["baseline_output"] else None
    result = run_trial(trial, Path(argv[0]).parent, baseline_output=baseline)
    return 0 if result.status in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
