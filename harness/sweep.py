"""A sweep: a YAML file expanded into trials (a grid and/or an explicit list) over one or more input clips.

Everything in the file is checked before any trial runs: unknown keys and axes, bad values and missing input
files fail with the file and line named.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from harness.config import ConfigError
from harness.results import RESULT_FILE, TRIALS_DIR, TrialResult, load_trial
from harness.trial import DEFAULT_REPEATS, DEFAULT_WARMUP, Trial, build_variants, safe_name
from variants import VARIANTS
from variants.values import resolve

log = logging.getLogger(__name__)

TOP_KEYS = (
    "name",
    "description",
    "base",
    "inputs",
    "baseline",
    "trials",
    "grid",
    "repeats",
    "warmup",
    "profile",
    "torch_trace",
    "score",
    "keep_video",
    "interleave",
    "max_processes",
    "overlap_startup",
    "experiment",
    "score_options",
)
# A sweep file is a page of settings: larger files, or aliases expanding to more values, are refused unread.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_COUNT = 10_000  # repeats, warm-ups
STALE_DIR = "stale"  # in the sweep folder: trial folders set aside (set_aside_stale)
SCORE_OPTIONS = ("syncnet_weights", "s3fd_weights", "fid_weights", "fvd_weights", "lpips_weights", "detector")


class SweepError(ValueError):
    pass


@dataclass
class Sweep:
    name: str
    path: Path
    trials: list[Trial]
    baseline: str
    experiment: str
    description: str = ""
    lines: dict[tuple, int] = field(default_factory=dict)
    interleave: bool = True  # repeats of the trials sharing an input in rounds (harness.interleave)
    max_processes: int | None = None  # trial processes of an input alive at once; None: as memory allows
    overlap_startup: bool = True  # a trial process's start-up beside others' untimed work
    overrides: list[str] = field(default_factory=list)  # the --set and --only given: the report's command
    only: list[str] = field(default_factory=list)
    unselected: list[Trial] = field(default_factory=list)  # the file's trials that --only leaves out


def _key_lines(root: yaml.Node, path: Path) -> dict[tuple, int]:
    """Line number (1-based) of every mapping key and list item, by its path in the document. A key that is
    not a plain name, or appears twice in one mapping (YAML would keep the last silently), is refused."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, at: tuple) -> None:
        lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                if key.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`
                    walk(value, at)
                    continue
                if not isinstance(key, yaml.ScalarNode):
                    raise SweepError(f"{path}:{line}: a key must be a plain name, not a list or a mapping")
                if key.value in seen:
                    raise SweepError(
                        f"{path}:{line}: key {key.value!r} appears twice in one mapping (first on line "
                        f"{seen[key.value]}); YAML would keep only the last"
                    )
                seen[key.value] = line
                lines[(*at, key.value)] = line
                walk(value, (*at, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*at, i))

    walk(root, ())
    return lines


class _Locator:
    """Names where a key came from: `file:line`, or the `--set` that overrode it."""

    def __init__(self, path: Path, lines: dict[tuple, int], overridden: set[tuple]) -> None:
        self.path, self.lines, self.overridden = path, lines, overridden

    def where(self, *keys: Any) -> str:
        for depth in range(len(keys), 0, -1):
            if keys[:depth] in self.overridden:
                return "--set " + ".".join(map(str, keys[:depth]))
        for depth in range(len(keys), -1, -1):
            if keys[:depth] in self.lines:
                return f"{self.path}:{self.lines[keys[:depth]]}"
        return str(self.path)

    def fail(self, message: str, *keys: Any) -> SweepError:
        return SweepError(f"{self.where(*keys)}: {message}")


def load_sweep(path: str | Path, overrides: list[str] | None = None, only: list[str] | None = None) -> Sweep:
    """Read and check a sweep file. overrides: "KEY=VALUE" for top-level keys or "base.FIELD=VALUE" (values
    parsed as YAML), applied over the file; only: run just these trials (names as in the file)."""
    path = Path(path)
    data, lines = _read_yaml(path)
    at = _Locator(path, lines, _apply_overrides(data, overrides or []))
    _check_top_keys(data, at)
    data = _check_structure(data, at)
    base = data.get("base") or {}
    _check_base(base, at)
    score_options = _check_score_options(data.get("score_options") or {}, at)
    inputs = data.get("inputs") or [{"name": "demo", "video": "demo", "audio": "demo"}]
    _check_inputs(inputs, path, at)
    combos = _combinations(data, at)
    baseline = _baseline_name(data, combos, at)
    baseline_variants = next(values for name, values, _ in combos if name == baseline)
    trials = []
    for name, values, origin in combos:
        for i, item in enumerate(inputs):
            input_name = item.get("name") or f"input{i}"
            trial = Trial(
                name=name if len(inputs) == 1 else f"{input_name}/{name}",
                variants=values,
                base=base,
                input_name=input_name,
                video=_input_path(item.get("video", "demo"), path),
                audio=_input_path(item.get("audio", "demo"), path),
                repeats=int(data.get("repeats", DEFAULT_REPEATS)),
                warmup=int(data.get("warmup", DEFAULT_WARMUP)),
                profile=bool(data.get("profile", True)),
                torch_trace=bool(data.get("torch_trace", False)),
                score=bool(data.get("score", True)),
                keep_video=bool(data.get("keep_video", True)),
                is_baseline=name == baseline,
                compare=name != baseline,
                baseline_variants=baseline_variants,
                score_options=score_options,
            )
            try:
                trial.resolve()
            except ValueError as exc:
                raise at.fail(f"trial {name!r}: {exc}", *origin) from None
            trials.append(trial)
    selected = _select(trials, only, path, at)
    return Sweep(
        name=_check_name(str(data.get("name") or path.stem), at),
        path=path,
        trials=selected,
        baseline=baseline,
        experiment=str(data.get("experiment") or data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        lines=lines,
        interleave=bool(data.get("interleave", True)),
        max_processes=_max_processes(data.get("max_processes", "auto"), at),
        overlap_startup=bool(data.get("overlap_startup", True)),
        overrides=list(overrides or []),
        only=list(only or []),
        unselected=[t for t in trials if not any(t is chosen for chosen in selected)],
    )


def _max_processes(value: Any, at: _Locator) -> int | None:
    """`auto` (as many as the measured memory allows) or a number >= 2 (the baseline and a trial)."""
    if value in ("auto", None):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise at.fail(f"max_processes must be 'auto' or a whole number >= 2, got {value!r}", "max_processes")
    return value


def _check_name(name: str, at: _Locator) -> str:
    """The sweep's name becomes its output folder (outputs/<name>): one plain folder name, nothing that could
    point elsewhere."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise at.fail(
            f"name {name!r}: use letters, digits and . _ - only (it names the output folder outputs/<name>)",
            "name",
        )
    return name


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """The file's mapping and the line of every key. Refused before anything is built from it: a file over
    MAX_FILE_BYTES, aliases that expand past MAX_NODES values or into themselves, an empty file."""
    text = _read_text(path)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_expansion(root, path)
            lines = _key_lines(root, path)
            data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SweepError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise SweepError(f"{path}: nested too deeply to be a sweep file") from None
    finally:
        loader.dispose()
    if root is None or data == {}:
        raise SweepError(
            f"{path}: the file is empty (or holds only comments); a sweep names its trials or grid "
            "(see experiments/quickstart.yaml)"
        )
    if not isinstance(data, dict):
        raise SweepError(f"{path}: the top level must be a mapping of keys ({', '.join(TOP_KEYS)})")
    return data, lines


def _read_text(path: Path) -> str:
    if not path.exists():
        raise SweepError(f"{path}: sweep file not found")
    if not path.is_file():
        raise SweepError(f"{path}: not a file; give a sweep YAML file (see experiments/)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SweepError(
            f"{path}: {size} bytes; a sweep file holds at most {MAX_FILE_BYTES} (a page of settings)"
        )
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise SweepError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Aliases (*name) repeat what their anchor holds: a few nested ones describe billions of values, which
    every later step would walk ("billion laughs"). Counted on the parsed graph, each node once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise SweepError(
                f"{path}:{node.start_mark.line + 1}: an alias here refers to a value that holds it"
            )
        open_nodes.add(id(node))
        children = _children(node)
        total = 1 + sum(size(child) for child in children)
        if total > MAX_NODES:
            raise SweepError(
                f"{path}:{node.start_mark.line + 1}: through its aliases (*name) this value expands to more "
                f"than {MAX_NODES} values; a sweep file may not"
            )
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_top_keys(data: dict, at: _Locator) -> None:
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(TOP_KEYS)}"
            raise at.fail(f"unknown key {key!r}{hint}", key)


# What each top-level key holds; a key set to nothing (`repeats:`) takes its default.
KINDS = {
    "name": "text",
    "description": "text",
    "base": "mapping",
    "inputs": "list",
    "baseline": "text",
    "trials": "list",
    "grid": "mapping",
    "repeats": "count",
    "warmup": "count",
    "profile": "flag",
    "torch_trace": "flag",
    "score": "flag",
    "keep_video": "flag",
    "interleave": "flag",
    "experiment": "text",
    "score_options": "mapping",
}
_EXPECTED = {
    "text": "a text",
    "mapping": "a mapping (key: value)",
    "list": "a list (- item)",
    "count": f"a whole number from 0 to {MAX_COUNT}",
    "flag": "true or false",
}
TRIAL_KEYS = ("name", "variants")
INPUT_KEYS = ("name", "video", "audio")


def _kind_error(value: Any, kind: str, at: _Locator, *keys: Any) -> SweepError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    what = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
    return at.fail(f"{what}: expected {_EXPECTED[kind]}, got {type(value).__name__} {shown}", *keys)


def _checked(value: Any, kind: str, at: _Locator, *keys: Any) -> Any:
    """`value` if it is of `kind` (texts come back as str); else a SweepError naming file:line."""
    fits = {
        "text": isinstance(value, (str, int, float)) and not isinstance(value, bool),
        "mapping": isinstance(value, dict),
        "list": isinstance(value, list),
        "count": isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT,
        "flag": isinstance(value, bool),
    }[kind]
    if not fits:
        raise _kind_error(value, kind, at, *keys)
    return str(value) if kind == "text" else value


def _check_items(items: list, allowed: tuple[str, ...], at: _Locator, key: str) -> list[dict]:
    """Each item of `trials` / `inputs`: a mapping of the allowed keys, its names and paths texts."""
    checked = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            example = "name: NAME, variants: {FAMILY: VALUE}" if key == "trials" else "name, video, audio"
            got = f"{type(item).__name__} {item!r}"[:80]
            raise at.fail(f"{key}[{i}]: expected a mapping ({example}), got {got}", key, i)
        for name in item:
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(allowed)}"
                raise at.fail(f"{key}[{i}]: unknown key {name!r}{hint}", key, i, name)
        item = {k: v for k, v in item.items() if v is not None}
        for name, value in item.items():
            item[name] = (
                _checked(value, "mapping", at, key, i, name)
                if name == "variants"
                else _checked(value, "text", at, key, i, name)
            )
        checked.append(item)
    return checked


def _check_structure(data: dict, at: _Locator) -> dict:
    """Every top-level value of the kind its key takes, before anything is built from it."""
    data = {k: v for k, v in data.items() if v is not None}
    for key, value in data.items():
        if key in KINDS:
            data[key] = _checked(value, KINDS[key], at, key)
    for key, allowed in (("trials", TRIAL_KEYS), ("inputs", INPUT_KEYS)):
        if key in data:
            data[key] = _check_items(data[key], allowed, at, key)
    for axis, values in (data.get("grid") or {}).items():
        if values == []:
            raise at.fail(f"grid.{axis}: the axis has no values", "grid", axis)
    return data


def _check_base(base: Any, at: _Locator) -> None:
    """The base is a mapping of run settings, checked key by key so the error names the line at fault."""
    if not isinstance(base, dict):
        raise at.fail(f"base must be a mapping of run settings, got {type(base).__name__}", "base")
    for key, value in base.items():
        try:
            resolve({key: value}, where=("base",))
        except ConfigError as exc:
            raise at.fail(str(exc).removeprefix("base: "), "base", key) from None
    try:
        resolve(base, where=("base",))
    except ConfigError as exc:
        raise at.fail(str(exc).removeprefix("base: "), "base") from None


def _check_score_options(options: dict, at: _Locator) -> dict:
    checked = dict(options)
    for key, value in options.items():
        if key not in SCORE_OPTIONS:
            raise at.fail(
                f"unknown score option {key!r}; known: {', '.join(SCORE_OPTIONS)}", "score_options", key
            )
        if key == "lpips_weights":
            if not isinstance(value, list) or len(value) != 2:
                raise at.fail(
                    "score option lpips_weights: expected [AlexNet .pth, lpips alex.pth], two paths",
                    "score_options",
                    key,
                )
            checked[key] = tuple(value)
        paths = value if key == "lpips_weights" else [value] if key.endswith("_weights") else []
        for item in paths:
            if not Path(item).exists():
                raise at.fail(f"score option {key}: file not found: {item}", "score_options", key)
    return checked


def _check_inputs(inputs: list, path: Path, at: _Locator) -> None:
    for i, item in enumerate(inputs):
        for role in ("video", "audio"):
            value = str(item.get(role, "demo"))
            if value != "demo" and not (path.parent / value).exists() and not Path(value).exists():
                raise at.fail(f"input {role} file not found: {value}", "inputs", i, role)


def _combinations(data: dict, at: _Locator) -> list[tuple[str, dict[str, Any], tuple]]:
    """(name, variant values, where in the file) for each explicit trial, then each grid point; every family
    and value is checked here."""
    combos: list[tuple[str, dict[str, Any], tuple]] = []
    for i, item in enumerate(data.get("trials") or []):
        name = item.get("name") or f"trial{i}"
        combos.append((name, dict(item.get("variants") or {}), ("trials", i, "variants")))
    axes = list((data.get("grid") or {}).items())
    for values in itertools.product(*[v if isinstance(v, list) else [v] for _, v in axes]) if axes else []:
        variant_values = {axis: value for (axis, _), value in zip(axes, values, strict=True)}
        name = ",".join(f"{k}={_short(v)}" for k, v in variant_values.items())
        combos.append((name, variant_values, ("grid",)))
    for name, values, origin in combos:
        for family in values:
            if family not in VARIANTS:
                close = difflib.get_close_matches(str(family), VARIANTS.names(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(VARIANTS.names())}"
                key_path = (*origin, family) if origin[0] == "trials" else ("grid", family)
                raise at.fail(f"unknown variant family {family!r}{hint}", *key_path)
        try:
            build_variants(values)
        except ValueError as exc:
            raise at.fail(f"trial {name!r}: {exc}", *origin) from None
    return combos


def _baseline_name(data: dict, combos: list, at: _Locator) -> str:
    """The baseline trial's name; a sweep without one gets a 'baseline' trial of the base alone."""
    baseline = data.get("baseline", "baseline")
    if baseline not in [c[0] for c in combos]:
        if "baseline" in data:
            raise at.fail(f"baseline {baseline!r} names no trial in the file", "baseline")
        combos.insert(0, ("baseline", {}, ("trials",)))
    return baseline


def _select(trials: list[Trial], only: list[str] | None, path: Path, at: _Locator) -> list[Trial]:
    names = [t.name for t in trials]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise at.fail(f"trial names repeat: {', '.join(duplicates)}", "trials")
    folders: dict[str, str] = {}
    for name in names:
        other = folders.setdefault(safe_name(name), name)
        if other != name:
            raise at.fail(
                f"trial names {other!r} and {name!r} differ only in characters a folder name cannot hold "
                f"(both would be {safe_name(name)!r}); rename one",
                "trials",
            )
    if not only:
        return trials
    unknown = [n for n in only if n not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; trials: {', '.join(names)}"
        raise SweepError(f"{path}: --only names no trial {unknown[0]!r}{hint}")
    return [t for t in trials if t.name in only]


def _apply_overrides(data: dict, overrides: list[str]) -> set[tuple]:
    """Set "KEY=VALUE" / "base.FIELD=VALUE" in the loaded file; returns the key paths set."""
    done: set[tuple] = set()
    for text in overrides:
        key, sep, value = text.partition("=")
        keys = tuple(key.strip().split("."))
        if not sep or not keys[0]:
            raise SweepError(f"--set expects KEY=VALUE or base.FIELD=VALUE, got {text!r}")
        if keys[0] not in TOP_KEYS or (keys[0] == "base") != (len(keys) == 2) or len(keys) > 2:
            close = difflib.get_close_matches(keys[0], TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close and close[0] != keys[0] else ""
            raise SweepError(
                f"--set {key}: expected a top-level key ({', '.join(TOP_KEYS)}) or base.FIELD{hint}"
            )
        parsed = yaml.safe_load(value)
        if len(keys) == 2:
            data.setdefault("base", {})
            data["base"] = dict(data["base"] or {}, **{keys[1]: parsed})
        else:
            data[keys[0]] = parsed
        done.add(keys)
    return done


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else str(value)


def _input_path(value: str, sweep_path: Path) -> str:
    if value in ("demo", ""):
        return "demo"
    candidate = sweep_path.parent / value
    return str(candidate.resolve() if candidate.exists() else Path(value).resolve())


def run_sweep(sweep: Sweep, out_dir: Path, **options: Any) -> list[TrialResult]:
    """Check every trial's inputs and output first (nothing runs if one cannot), then run the sweep holding its
    folder's lock: a second sweep on the same folder stops with a message instead of running every trial
    again beside this one. Ctrl-C, SIGTERM or SIGHUP end the running trial processes, record those trials as
    failed (killed, with the reason) and end the sweep; running it again resumes. Options: `_run_sweep`'s."""
    from harness.folder_lock import FolderLock
    from harness.interrupts import signals_interrupt
    from harness.launcher import stop_all

    with FolderLock(out_dir, what=f"sweep {sweep.name}"), signals_interrupt():
        if options.get("log_mlflow", True):
            from harness.tracking import check_reachable

            check_reachable(options.get("tracking_uri"))
        check_trials(sweep, out_dir)
        set_aside_stale(sweep, out_dir)
        try:
            return _run_sweep(sweep, out_dir, **options)
        except KeyboardInterrupt as exc:
            stop_all(f"the sweep was interrupted ({exc or 'Ctrl-C'})")
            raise


class LoggingFailed(RuntimeError):
    """The trials ran and their files, the results table and the report are written, but logging to MLflow
    failed; `results` are the trials' results."""

    def __init__(self, message: str, results: list[TrialResult]) -> None:
        super().__init__(message)
        self.results = results


def set_aside_stale(sweep: Sweep, out_dir: Path) -> None:
    """One trial name, one row: `trials/` keeps only the folders of the file's trials as they are now (a folder
    is named for its trial and key, and the key hashes its settings and its inputs' content). Any other folder
    (an edited trial's earlier result, a trial gone from the file) moves to `stale/` with a warning, so the
    results table, MLflow and the report never read it; one set aside earlier that is current again comes back
    instead of running again."""
    from harness.folder_lock import FolderLock
    from harness.launcher import TRIAL_LOCK_WAIT_S
    from harness.runner import resolve_inputs

    trials_dir, stale_dir = out_dir / TRIALS_DIR, out_dir / STALE_DIR
    current = {resolve_inputs(t).folder_name() for t in [*sweep.trials, *sweep.unselected]}
    for name in sorted(current):
        if (stale_dir / name).is_dir() and not (trials_dir / name).exists():
            trials_dir.mkdir(parents=True, exist_ok=True)
            (stale_dir / name).rename(trials_dir / name)
            log.info("%s: current again (same settings and inputs); taken back from %s", name, stale_dir)
    if not trials_dir.is_dir():
        return
    for folder in sorted(p for p in trials_dir.iterdir() if p.is_dir() and p.name not in current):
        # a trial process of a killed sweep may still be ending in it: its lock says when it is done
        with FolderLock(folder, what="setting a stale trial folder aside", wait_s=TRIAL_LOCK_WAIT_S):
            stale_dir.mkdir(exist_ok=True)
            target = stale_dir / folder.name
            copies = 1
            while target.exists():
                target, copies = stale_dir / f"{folder.name}.{copies}", copies + 1
            folder.rename(target)
        log.warning(
            "%s is not a trial of %s as it is now (its settings or inputs changed, or it left the file): set "
            "aside in %s; the results table, MLflow and the report leave it out",
            folder.name,
            sweep.path,
            target,
        )


def log_only(sweep: Sweep, out_dir: Path, tracking_uri: str | None = None) -> list[TrialResult]:
    """Run no trial: the finished trials' files become the results table, the report and MLflow runs (for a
    sweep run with --no-mlflow, or whose logging failed). Returns the results found."""
    from harness.folder_lock import FolderLock
    from harness.results import ResultsError, trial_folders
    from harness.tracking import check_reachable

    if not (out_dir / TRIALS_DIR).is_dir():
        raise SweepError(f"{out_dir}: no {TRIALS_DIR}/ folder: no trial of {sweep.path} has run there to log")
    with FolderLock(out_dir, what=f"sweep {sweep.name} (logging)"):
        check_reachable(tracking_uri)
        set_aside_stale(sweep, out_dir)
        results = []
        for folder in trial_folders(out_dir):
            try:
                results.append(load_trial(folder).result)
            except ResultsError as exc:  # the table shows it as failed, MLflow leaves it out
                log.warning("%s", exc)
        write_summaries(sweep, out_dir, tracking_uri, True, results)
    return results


def check_trials(sweep: Sweep, out_dir: Path) -> None:
    """Before any trial runs: each trial's inputs readable with the streams it needs, its output writable, in a
    known container and none of its inputs (a run never writes over or removes an input)."""
    from harness.preflight import check_run
    from harness.runner import output_path, resolve_inputs

    for trial in sweep.trials:
        trial = resolve_inputs(trial)
        config = trial.resolve()
        try:
            check_run(config, output_path(config, out_dir / "trials" / trial.folder_name()))
        except (ValueError, OSError) as exc:
            raise SweepError(f"{sweep.path}: trial {trial.name!r}: {exc}") from None


def _run_sweep(
    sweep: Sweep,
    out_dir: Path,
    inline: bool = False,
    tracking_uri: str | None = None,
    log_mlflow: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
) -> list[TrialResult]:
    """Run every trial not finished yet (baselines first); write the results table; log to MLflow.

    executor: "local" (a fresh process per trial on this machine) or "ray" (a Ray task per trial on the
    cluster at `ray_address`, default a new local one: harness.ray_executor).
    Baseline outputs stay until every trial has been compared with them; with `keep_video: false` they are
    removed at the end."""
    from harness.launcher import run_in_subprocess
    from harness.results import write_json_atomic
    from harness.runner import output_path, resolve_inputs, run_trial
    from metrics.generated_region import remove_recording

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out_dir / "sweep.json",
        {
            "name": sweep.name,
            "file": str(sweep.path),
            "baseline": sweep.baseline,
            "experiment": sweep.experiment,
            "executor": "inline" if inline else executor,
            "command": sweep_command(sweep, out_dir, inline, executor, ray_address),
            "trials": [
                t.name for t in sweep.trials
            ],  # what this run set out to do: a report tells what is missing
        },
    )
    ordered = sorted(sweep.trials, key=lambda t: not t.is_baseline)
    baseline_outputs: dict[str, Path] = {}
    results = []
    deferred: list[tuple[Trial, Path, Path | None]] = []  # run below, interleaved
    bar = tqdm(ordered, desc=f"sweep {sweep.name}", unit="trial")
    for trial in bar:
        trial = resolve_inputs(trial)
        folder = out_dir / "trials" / trial.folder_name()
        bar.set_postfix_str(trial.name)
        result = _finished(folder, trial)
        if result is not None:
            log.info("skipping finished trial %s (%s)", trial.name, folder.name)
        elif inline:
            result = run_trial(trial, folder, baseline_output=baseline_outputs.get(trial.input_name))
        elif sweep.interleave or executor == "ray":
            deferred.append((trial, folder, baseline_outputs.get(trial.input_name)))
            if trial.is_baseline:  # where it will write: its cold run comes before any other trial's
                baseline_outputs[trial.input_name] = output_path(trial.resolve(), folder)
            continue
        else:
            result = run_in_subprocess(trial, folder, baseline_output=baseline_outputs.get(trial.input_name))
        if trial.is_baseline and result.status == "ok":
            baseline_outputs[trial.input_name] = output_path(trial.resolve(), folder)
        results.append(result)
    if executor == "ray":
        from harness.ray_executor import run_on_ray

        results += run_on_ray(deferred, ray_address)
    else:
        results += _run_in_rounds(deferred, sweep, out_dir)
    if not all(t.keep_video for t in sweep.trials):
        for output in baseline_outputs.values():
            output.unlink(missing_ok=True)
            remove_recording(output)
    write_summaries(sweep, out_dir, tracking_uri, log_mlflow, results)
    return results


def write_summaries(
    sweep: Sweep, out_dir: Path, tracking_uri: str | None, log_mlflow: bool, results: list[TrialResult]
) -> None:
    """From the trials' files: speed ratios with intervals (and a warning if the machine was busy), the
    results table, plots, MLflow and the report. The table and the report are written whatever MLflow does;
    then LoggingFailed (carrying `results`) if logging to MLflow failed."""
    from harness.noise import warn_if_busy, with_speed_ratios, write_speed_ratios
    from harness.results import SWEEP_PLOTS_DIR, collect_results, finished_trials, write_table
    from harness.stages import STAGES
    from reports.build import write_report
    from reports.plots import draw_if_available, sweep_plots, trial_stage_times

    write_speed_ratios(out_dir, sweep.baseline)
    warn_if_busy(out_dir)
    table = with_speed_ratios(collect_results(out_dir), out_dir)
    write_table(table, out_dir)
    if draw_if_available(
        lambda: sweep_plots(table, out_dir / SWEEP_PLOTS_DIR, STAGES, baseline=sweep.baseline)
        + trial_stage_times(finished_trials(out_dir))
    ):
        log.info("plots in %s and the trial folders", out_dir / SWEEP_PLOTS_DIR)
    failure = ""
    if log_mlflow:
        from harness.tracking import log_sweep

        try:
            log_sweep(out_dir, experiment_name=sweep.experiment, tracking_uri=tracking_uri)
        except Exception as exc:  # the files hold every result: they are logged later (--log-only)
            log.debug("logging to MLflow failed", exc_info=True)
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            failure = (
                f"logging to MLflow failed ({reason}); the results are in {out_dir}: log them later with "
                f"`harness sweep {sweep.path} --log-only`"
            )
    if draw_if_available(lambda: write_report(out_dir)):
        log.info("report: %s", out_dir / "report" / "report.md")
    if failure:
        raise LoggingFailed(failure, results)


def _drop_unpaired_repeats(group: list[tuple[Trial, Path, Path | None]]) -> None:
    """Before a resumed run: each trial keeps only the repeats whose round holds the baseline's kept repeat."""
    from harness.partial_repeats import earlier_repeats, keep_paired

    baseline_rounds = next((set(earlier_repeats(f)[1]) for t, f, _ in group if t.is_baseline), None)
    if baseline_rounds is None:
        return
    for trial, folder, _ in group:
        if not trial.is_baseline and (dropped := keep_paired(folder, baseline_rounds)):
            log.warning("%s: %d kept repeat(s) without the baseline's: timed again", trial.name, dropped)


def _run_in_rounds(
    deferred: list[tuple[Trial, Path, Path | None]], sweep: Sweep, out_dir: Path
) -> list[TrialResult]:
    """Each input's trials in fresh processes, their timed repeats in rounds beside the baseline's
    (harness.interleave); how each input's rounds ran goes to `<sweep>/rounds.json`."""
    from functools import partial

    from harness.interleave import Job, run_interleaved
    from harness.launcher import run_in_subprocess
    from harness.partial_repeats import earlier_repeats
    from harness.results import read_json, write_json_atomic

    results: list[TrialResult] = []
    for input_name in dict.fromkeys(trial.input_name for trial, _, _ in deferred):
        group = [item for item in deferred if item[0].input_name == input_name]
        log.info(
            "trials of input %s: %s, repeats interleaved", input_name, ", ".join(t.name for t, _, _ in group)
        )
        # repeats an interrupted run of the sweep timed are kept: each process times only the rest
        _drop_unpaired_repeats(group)
        kept = {trial.name: len(earlier_repeats(folder)[0]) for trial, folder, _ in group}
        jobs = [
            Job(
                partial(run_in_subprocess, trial, folder, baseline_output=ref),
                folder,
                trial.name,
                max(trial.repeats - kept[trial.name], 0),
                trial.is_baseline,
            )
            for trial, folder, ref in group
        ]
        if any(kept.values()):
            log.info("timed repeats kept from an interrupted run: %s", kept)
        rounds = run_interleaved(jobs, sweep.max_processes, sweep.overlap_startup)
        results += [r for r in rounds.results if r is not None]
        path = out_dir / "rounds.json"
        recorded = read_json(path) if path.exists() else {}
        record = rounds.record
        if any(kept.values()):  # repeats of an earlier run's rounds (their orders, if it got to record them)
            record = {**record, "kept_repeats": kept, "resumed_from": recorded.get(input_name)}
        write_json_atomic(path, {**recorded, input_name: record})
    return results


def sweep_command(
    sweep: Sweep, out_dir: Path, inline: bool = False, executor: str = "local", ray_address: str | None = None
) -> str:
    """The `harness sweep` command line that reproduces this sweep (same file, overrides, trials, executor)."""
    import shlex

    words = ["harness", "sweep", str(sweep.path), "--out-dir", str(out_dir)]
    for override in sweep.overrides:
        words += ["--set", override]
    if sweep.only:
        words += ["--only", ",".join(sweep.only)]
    if inline:
        words.append("--inline")
    if executor != "local":
        words += ["--executor", executor] + (["--address", ray_address] if ray_address else [])
    return shlex.join(words)


def _finished(folder: Path, trial: Trial) -> TrialResult | None:
    path = folder / RESULT_FILE
    if not path.exists():
        return None
    result = load_trial(folder).result
    if result.key == trial.key() and result.status in ("ok", "skipped"):
        return result
    return None
