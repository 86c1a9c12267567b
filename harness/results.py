"""The files a sweep leaves behind, and the one place that reads them back.

    <sweep_dir>/sweep.json                 name, file, baseline, experiment
    <sweep_dir>/trials/<trial>-<key>/      one folder per trial:
        config.json                        resolved RunConfig, written before the run
        result.json                        TrialResult, written when the trial ends (also when it fails)
        timed_runs.json                    every timed repeat's figures and the cold run's, unsummarised
        ...                                artifacts listed in result.json (paths relative to the folder)
    <sweep_dir>/speed_ratios.json          each trial's speed against its baseline, with interval (harness.noise)
    <sweep_dir>/results.csv, results.parquet   one row per trial (write_table)

Metric names carry their unit: `<stage>_s` (median over timed repeats), `cold_<stage>_s` (the first run,
kept apart), `<stage>_s_iqr|_min|_max` (spread over repeats), `total_s`, `fps`, `rtf` (output seconds per
wall second), `*_peak_rss_mb` / `*_peak_vram_mb` (MiB) and the scores.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas loads only where tables are built: a single `harness run` does without it
    import pandas as pd

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
TRIALS_DIR = "trials"
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
TIMED_RUNS_FILE = "timed_runs.json"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
STATUSES = ("ok", "failed", "skipped")


class ResultsError(ValueError):
    """A results file is missing or malformed; the message names it."""


def _to_json(value: Any) -> Any:
    """json.dumps fallback for the types trials produce: paths, numpy scalars and arrays, sets."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in the same folder and rename it over `path`, so readers (and a
    sweep resumed after a crash) see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not exc.filename:  # a failed write() names no file: name the target
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write obj as indented JSON to path, atomically; returns the path."""
    text = json.dumps(obj, indent=2, default=_to_json) + "\n"

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return replace_atomically(Path(path), write)


def write_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    """np.save through replace_atomically (a full disk leaves no empty or partial .npy at `path`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
            np.save(f, array)

    return replace_atomically(Path(path), write)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); delete it to re-run the trial") from None


@dataclass
class TrialResult:
    """The content of result.json. Keys it does not know are kept in `extra` and written back."""

    trial: str
    status: str
    key: str = ""
    variants: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    transforms: list[str] = field(default_factory=list)  # pipeline transforms applied, in order
    reason: str = ""  # why it was skipped
    error: str = ""
    traceback: str = ""
    wall_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResultsError(
                f"trial {self.trial!r}: status must be one of {', '.join(STATUSES)}, got {self.status!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "result") -> TrialResult:
        for name in ("trial", "status"):
            if name not in data:
                raise ResultsError(f"{source}: missing the key {name!r}")
        for name, kind in (
            ("variants", dict),
            ("params", dict),
            ("tags", dict),
            ("metrics", dict),
            ("artifacts", list),
            ("transforms", list),
        ):
            if not isinstance(data.get(name, kind()), kind):
                raise ResultsError(
                    f"{source}: {name!r} must be a {kind.__name__}, got {type(data[name]).__name__}"
                )
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)
        except ResultsError as exc:
            raise ResultsError(f"{source}: {exc}") from None

    def write(self, folder: str | Path) -> Path:
        return write_json_atomic(Path(folder) / RESULT_FILE, self.to_dict())


@dataclass
class TrialRecord:
    """One trial folder read back: its result, its resolved config ({} if config.json is missing)."""

    folder: Path
    result: TrialResult
    config: dict[str, Any]

    def artifact_files(self) -> list[Path]:
        """The listed artifacts that exist (a video deleted after scoring, say, is left out)."""
        return [self.folder / a for a in self.result.artifacts if (self.folder / a).is_file()]


def load_trial(folder: str | Path) -> TrialRecord:
    folder = Path(folder)
    result_path = folder / RESULT_FILE
    if not result_path.exists():
        raise ResultsError(
            f"{folder}: no {RESULT_FILE} (the trial has not finished, or is not a trial folder)"
        )
    data = read_json(result_path)
    if not isinstance(data, dict):
        raise ResultsError(f"{result_path}: expected a JSON object, got {type(data).__name__}")
    result = TrialResult.from_dict(data, source=str(result_path))
    config_path = folder / CONFIG_FILE
    config = read_json(config_path) if config_path.exists() else {}
    return TrialRecord(folder=folder, result=result, config=config)


def trial_folders(sweep_dir: str | Path) -> list[Path]:
    """Trial folders of a sweep that hold a result.json, in name order."""
    trials = Path(sweep_dir) / TRIALS_DIR
    if not trials.is_dir():
        raise ResultsError(
            f"{sweep_dir}: no {TRIALS_DIR}/ folder; pass a sweep output folder (with sweep.json)"
        )
    return sorted(p.parent for p in trials.glob(f"*/{RESULT_FILE}"))


def _is_time_key(key: str) -> bool:
    return key.endswith("_s")


def summarise_repeats(
    runs: Sequence[Mapping[str, float]], cold: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Combine the timed repeats of one trial into its metrics.

    Times (`*_s`): the median, plus `_iqr`, `_min`, `_max`. Peaks (`*peak*`): the largest over repeats
    (a peak is a peak). Other numbers: the median. A key missing from some runs is summarised over the runs
    that have it. The cold (first) run is kept apart as `cold_<key>`. `repeats` is the number of runs.
    """
    if not runs:
        raise ValueError("summarise_repeats needs at least one timed run (repeats >= 1)")
    keys = list(dict.fromkeys(k for run in runs for k in run))
    out: dict[str, float] = {}
    for key in keys:
        values = [float(run[key]) for run in runs if key in run]
        if "peak" in key:
            out[key] = max(values)
            continue
        out[key] = statistics.median(values)
        if _is_time_key(key):
            q1, q3 = np.percentile(values, [25, 75])
            out[f"{key}_iqr"] = float(q3 - q1)
            out[f"{key}_min"] = min(values)
            out[f"{key}_max"] = max(values)
    out.update({f"cold_{k}": float(v) for k, v in (cold or {}).items()})
    out["repeats"] = float(len(runs))
    return out


def _cell(value: Any) -> Any:
    """Table cells are scalars; lists and dicts become compact JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_to_json)
    return value


def _row(record: TrialRecord, sweep_dir: Path) -> dict[str, Any]:
    r = record.result
    row: dict[str, Any] = {
        "trial": r.trial,
        "status": r.status,
        "key": r.key,
        "folder": str(record.folder.relative_to(sweep_dir)),
        "variants": _cell(r.variants),
        "reason": r.reason,
        "error": r.error.splitlines()[0] if r.error else "",
        "wall_s": r.wall_s,
    }
    # metrics, then params (config.*, variant.*), then tags (env.*, weights.*): all namespaced apart;
    # on a clash the earlier column wins and the clash is logged.
    for source in (r.metrics, r.params, r.tags):
        for name, value in source.items():
            if name in row:
                log.warning(
                    "%s: %r appears twice in the trial's result; keeping the first", record.folder, name
                )
                continue
            row[name] = _cell(value)
    return row


def collect_results(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per finished trial of the sweep (status ok, failed or skipped).

    A trial folder whose result.json cannot be read becomes a failed row naming the problem, so one broken
    file never hides the others.
    """
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    rows = []
    for folder in trial_folders(sweep_dir):
        try:
            rows.append(_row(load_trial(folder), sweep_dir))
        except ResultsError as exc:
            log.warning("%s", exc)
            rows.append(
                {
                    "trial": folder.name,
                    "status": "failed",
                    "folder": str(folder.relative_to(sweep_dir)),
                    "error": str(exc),
                }
            )
    base = ["trial", "status", "key", "folder", "variants", "reason", "error", "wall_s"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(base + [k for row in rows for k in row])))


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: object columns holding mixed types become strings."""
    import pandas as pd

    out = df.copy()
    for name in out.columns:
        if pd.api.types.is_object_dtype(out[name]) and not all(
            isinstance(v, str) for v in out[name].dropna()
        ):
            out[name] = out[name].map(lambda v: None if pd.isna(v) else str(v))
    return out


def write_table(df: pd.DataFrame, sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write results.csv and results.parquet into the sweep folder (atomically); returns both paths."""
    sweep_dir = Path(sweep_dir)
    csv = replace_atomically(sweep_dir / RESULTS_CSV, lambda tmp: df.to_csv(tmp, index=False))
    parquet = replace_atomically(
        sweep_dir / RESULTS_PARQUET, lambda tmp: _parquet_safe(df).to_parquet(tmp, index=False)
    )
    return csv, parquet
