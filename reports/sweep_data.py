"""A sweep as the reports read it: its folder, sweep.json, the results table and the MLflow run ids.

Reports never re-measure: every figure comes from the files the sweep wrote (the trials' folders,
speed_ratios.json; results.csv where the folders are gone). A sweep still running, or stopped early, reads as
what has finished, with the trials still to come listed (`pending`). A sweep is named by its folder, by its name under `outputs/`, or by its MLflow parent
run's id (the run's `harness.sweep_dir` tag says where the folder is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.noise import BASELINE, with_speed_ratios
from harness.results import (
    RESULT_FILE,
    RESULTS_CSV,
    SWEEP_FILE,
    TRIALS_DIR,
    ResultsError,
    collect_results,
    read_json,
)
from harness.tracking import RUNS_FILE

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class SweepData:
    folder: Path
    info: dict[str, Any]  # sweep.json
    table: pd.DataFrame  # one row per trial, speed ratios included
    mlflow: dict[str, Any] = field(default_factory=dict)  # mlflow_runs.json, {} when not logged
    pending: list[str] = field(default_factory=list)  # trials the sweep set out to run that have no result

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

        from harness.tracking import bounded_http, resolve_tracking

        with bounded_http():
            run = MlflowClient(tracking_uri=resolve_tracking(tracking_uri)[0]).get_run(str(ref))
        folder = run.data.tags.get("harness.sweep_dir")
        if folder and (Path(folder) / SWEEP_FILE).exists():
            return Path(folder)
        raise ResultsError(f"MLflow run {ref} names no sweep folder on this machine ({folder or 'no tag'})")
    raise ResultsError(f"{ref}: not a sweep folder (no {SWEEP_FILE}), a sweep under {outputs}/, or a run id")


def load(folder: str | Path) -> SweepData:
    """Read a sweep folder: its trials' files (current even while the sweep runs), else results.csv. Raises
    ResultsError when no trial has finished, or a trial has two results (folders of earlier settings that a
    sweep of this version would have set aside)."""
    folder = Path(folder)
    info = read_json(folder / SWEEP_FILE) if (folder / SWEEP_FILE).exists() else {}
    csv = folder / RESULTS_CSV
    table = (
        pd.read_csv(csv) if csv.exists() and not (folder / TRIALS_DIR).is_dir() else collect_results(folder)
    )
    pending = _pending(folder, info, table)
    if table.empty:
        waiting = f" (no result yet: {', '.join(pending)})" if pending else ""
        raise ResultsError(
            f"{folder}: no trial has finished yet{waiting}; run `harness report` again when one has"
        )
    twice = sorted(set(table.loc[table["trial"].duplicated(), "trial"]))
    if twice:
        raise ResultsError(
            f"{folder}: trial(s) {', '.join(twice)} have more than one result in {TRIALS_DIR}/ (the older from "
            "earlier settings or inputs); run the sweep again, which sets the stale folders aside, or remove them"
        )
    if "speed_verdict" not in table:
        table = with_speed_ratios(table, folder)
    mlflow = read_json(folder / RUNS_FILE) if (folder / RUNS_FILE).exists() else {}
    return SweepData(folder=folder, info=info, table=table, mlflow=mlflow, pending=pending)


def _pending(folder: Path, info: dict[str, Any], table: pd.DataFrame) -> list[str]:
    """The trials sweep.json plans with no row in the table; for an older sweep.json without the list, the
    trial folders started but holding no result."""
    if "trials" in info:
        return [name for name in info["trials"] if name not in set(table["trial"])]
    started = folder / TRIALS_DIR
    return (
        sorted(p.name for p in started.glob("*/") if not (p / RESULT_FILE).exists())
        if started.is_dir()
        else []
    )
