"""A finished sweep as the reports read it: its folder, sweep.json, the results table and the MLflow run ids.

Reports never re-measure: every figure comes from the files the sweep wrote (results.csv, speed_ratios.json,
the trials' folders). A sweep is named by its folder, by its name under `outputs/`, or by its MLflow parent
run's id (the run's `harness.sweep_dir` tag says where the folder is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.noise import BASELINE, with_speed_ratios
from harness.results import RESULTS_CSV, SWEEP_FILE, ResultsError, collect_results, read_json
from harness.tracking import RUNS_FILE

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class SweepData:
    folder: Path
    info: dict[str, Any]  # sweep.json
    table: pd.DataFrame  # one row per trial, speed ratios included
    mlflow: dict[str, Any] = field(default_factory=dict)  # mlflow_runs.json, {} when not logged

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.folder.name)

    @property
    def ok(self) -> pd.DataFrame:
        """Finished trials, baselines first, then in table order."""
        ok = self.table[self.table["status"] == "ok"]
        first = ok["speed_verdict"].eq(BASELINE) if "speed_verdict" in ok else ok["trial"].eq(self.baseline)
        return pd.concat([ok[first], ok[~first]])

    @property
    def baseline(self) -> str:
        return str(self.info.get("baseline", "baseline"))

    def baseline_of(self, trial: str) -> str | None:
        """The name of the trial `trial` is compared with (itself for a baseline); None when it has none."""
        row = self.table.set_index("trial").loc[trial]
        if row.get("speed_verdict") == BASELINE:
            return trial
        reference = row.get("speed_baseline")
        return str(reference) if isinstance(reference, str) and reference else None


def locate(ref: str | Path, outputs: Path = Path("outputs"), tracking_uri: str | None = None) -> Path:
    """The folder of a sweep given as a folder, a sweep name under `outputs`, or an MLflow parent run id."""
    for candidate in (Path(ref), outputs / str(ref)):
        if (candidate / SWEEP_FILE).exists():
            return candidate
    if _RUN_ID.match(str(ref)):
        from mlflow.tracking import MlflowClient

        from harness.tracking import resolve_tracking

        run = MlflowClient(tracking_uri=resolve_tracking(tracking_uri)[0]).get_run(str(ref))
        folder = run.data.tags.get("harness.sweep_dir")
        if folder and (Path(folder) / SWEEP_FILE).exists():
            return Path(folder)
        raise ResultsError(f"MLflow run {ref} names no sweep folder on this machine ({folder or 'no tag'})")
    raise ResultsError(f"{ref}: not a sweep folder (no {SWEEP_FILE}), a sweep under {outputs}/, or a run id")


def load(folder: str | Path) -> SweepData:
    """Read a sweep folder: results.csv when written, else the trials' files (a sweep cut short)."""
    folder = Path(folder)
    info = read_json(folder / SWEEP_FILE) if (folder / SWEEP_FILE).exists() else {}
    csv = folder / RESULTS_CSV
    table = pd.read_csv(csv) if csv.exists() else collect_results(folder)
    if "speed_verdict" not in table:
        table = with_speed_ratios(table, folder)
    mlflow = read_json(folder / RUNS_FILE) if (folder / RUNS_FILE).exists() else {}
    return SweepData(folder=folder, info=info, table=table, mlflow=mlflow)
