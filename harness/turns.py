"""A trial process's side of the interleaved rounds (harness.interleave, the sweep's side, holds the schedule):
`claim_floor()` once loaded, then `turns()` for its timed repeats. Without a coordinator (`harness run`,
`--inline` or `interleave: false` sweeps, Ray) `claim_floor()` does nothing and `turns()` gives the trial's own
number of repeats. Kept apart from the coordinator so that the runner, below the sweep's layers, imports only
this."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

ADDRESS_ENV = "HARNESS_TURNS"  # the coordinator's socket, inherited by the trial processes
KEY_ENV = "HARNESS_TURNS_KEY"  # its authentication key (hex), so no other process can take a turn
_connection: Connection | None = None


def _ask(message: dict[str, Any]) -> dict[str, Any] | None:
    """Send a message to the sweep's coordinator and wait for its answer; None outside an interleaved sweep."""
    global _connection
    address = os.environ.get(ADDRESS_ENV)
    if not address:
        return None
    if _connection is None:
        _connection = Client(socket_name(address), family="AF_UNIX", authkey=bytes.fromhex(os.environ[KEY_ENV]))
    _connection.send(message)
    reply = _connection.recv()
    if not isinstance(reply, dict):
        raise RuntimeError(f"interleaved sweep: unexpected message from the coordinator: {reply!r}")
    return reply


def coordinated() -> bool:
    """Whether this process is a trial of an interleaved sweep (its repeats are timed in rounds)."""
    return bool(os.environ.get(ADDRESS_ENV))


def claim_floor(folder: Path) -> None:
    """After start-up: wait until this process may work alone (its cold run and warm-ups)."""
    _ask({"folder": identity(folder), "kind": "ready"})


def turns(repeats: int, folder: Path, memory: Callable[[], dict[str, float]]) -> Iterator[str | None]:
    """The round id of each timed repeat this process gets. In an interleaved sweep: as many as the coordinator
    hands out (a trial's `repeats`; the baseline one per round of the input), each after waiting for its slot,
    then one last park that is told to stop; every park sends `memory()` (what this process holds and the device
    has free, MB) for the coordinator's admissions. Otherwise: `repeats` times None."""
    if not coordinated():
        yield from [None] * max(repeats, 0)
        return
    while True:  # parks even without repeats: the coordinator learns this process's memory
        reply = _ask({"folder": identity(folder), "kind": "park", "memory": memory()})
        if reply is None or reply.get("round") is None:
            return
        yield str(reply["round"])


def identity(folder: Path | str) -> str:
    """How a trial's folder names its process to the coordinator."""
    return str(Path(folder).resolve())


def socket_name(address: str) -> str:
    """The address as the socket takes it: a leading '@' (how it travels in the environment, which cannot hold a
    NUL byte) names an abstract socket, whose name starts with NUL."""
    return "\0" + address[1:] if address.startswith("@") else address
