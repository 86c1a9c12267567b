"""Timed repeats kept across an interrupted interleaved sweep.

In an interleaved sweep a trial process writes its timed repeats, each with its round, to
`timed_runs.partial.json` as it times them. When the sweep is stopped (a device call's time limit, Ctrl-C) and run
again, the trial's new process keeps those repeats and times only the ones still missing, in new rounds beside
the baseline's (which keeps its own likewise): round ids are unique to each run of a sweep (harness.interleave),
so every repeat stays paired with the baseline's of its round. A trial's repeat whose round has no baseline
repeat (the run was stopped between the two) is dropped before the new run (`keep_paired`) and timed again
beside one: one such orphan would leave the whole trial unpaired (harness.noise). A sweep longer than one
sitting (five repeats of a minute-long clip and its cold compiles do not fit a 10-minute device call) is
finished by running it again. Each process still does its own cold run and warm-ups.

Repeats timed on another machine, or before its last boot, are dropped (their times do not compare with new
ones), as are those of a run that was not interleaved (no round to pair them by). A trial folder is named for
everything that decides its result (harness.trial.Trial.key), so a changed trial never finds another's repeats.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from harness.results import read_json, write_json_atomic

log = logging.getLogger(__name__)

PARTIAL_FILE = "timed_runs.partial.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def machine_identity() -> str:
    """This machine since its last boot (Linux; elsewhere the host name alone)."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def earlier_repeats(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The timed repeats and their rounds that an interrupted interleaved run of this trial left in `folder`,
    where they were timed on this machine since its last boot; ([], []) otherwise."""
    path = folder / PARTIAL_FILE
    if not path.exists():
        return [], []
    try:
        data = read_json(path)
        runs, rounds = list(data["runs"]), list(data["rounds"])
        same_machine = data["machine"] == machine_identity()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); its repeats are timed again", path, exc)
        return [], []
    if not same_machine:
        log.warning("%s: timed on %s, not this machine (%s): timed again", path, data["machine"], machine_identity())
        return [], []
    if len(runs) != len(rounds) or not all(isinstance(r, str) and r for r in rounds):
        return [], []
    return runs, rounds


def save_partial(folder: Path, runs: list[dict[str, Any]], rounds: list[str]) -> None:
    """Record the repeats timed so far (after each one)."""
    write_json_atomic(folder / PARTIAL_FILE, {"machine": machine_identity(), "runs": runs, "rounds": rounds})


def keep_paired(folder: Path, baseline_rounds: set[str]) -> int:
    """Drop the kept repeats in `folder` whose round the baseline's kept repeats lack; how many were
    dropped."""
    runs, rounds = earlier_repeats(folder)
    paired = [(run, round_) for run, round_ in zip(runs, rounds, strict=True) if round_ in baseline_rounds]
    if len(paired) < len(runs):
        save_partial(folder, [run for run, _ in paired], [round_ for _, round_ in paired])
    return len(runs) - len(paired)
