"""Interleaved repeats: the timed repeats of the trials that share an input run in rounds (A1 B1 C1 A2 B2 C2 ...),
not all of one trial's in a row, so a slow drift of the machine (another job, heat, clocks) lands on every trial
alike instead of on whichever trial happened to run then.

Each trial still runs in its own fresh process, and exactly one of them works at any moment (the others wait,
blocked on a socket, using no CPU): the "floor" passes between them. A trial process starts only when the floor
is free and holds it from birth through loading, its cold run and warm-ups; before each timed repeat it calls
`take_turn()`, which gives the floor back and waits until the coordinator (`run_interleaved`, in the sweep
process) hands it over again; after its last repeat it keeps the floor for its profiled pass and scoring and
gives it up by exiting. Waiting processes are served first-parked first-served, which is the round-robin.

The price: every trial process of one input is alive at once (each holds its loaded pipeline), so the memory
of all of them must fit; `interleave: false` in a sweep runs the trials one after another instead.
Without a coordinator (`harness run`, `--inline` sweeps) `take_turn()` does nothing.
"""

from __future__ import annotations

import os
import queue
import secrets
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
ADDRESS_ENV = "HARNESS_TURNS"  # the coordinator's socket, inherited by the trial processes
KEY_ENV = "HARNESS_TURNS_KEY"  # its authentication key (hex), so no other process can take a turn
_GO = "go"
_PARKED = "parked"
_connection: Connection | None = None


def take_turn() -> None:
    """Give the floor back and block until it is this process's turn again; a no-op outside an interleaved sweep."""
    global _connection
    address = os.environ.get(ADDRESS_ENV)
    if not address:
        return
    if _connection is None:
        _connection = Client(_socket(address), family="AF_UNIX", authkey=bytes.fromhex(os.environ[KEY_ENV]))
    _connection.send(_PARKED)
    if _connection.recv() != _GO:
        raise RuntimeError("interleaved sweep: unexpected message from the coordinator")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _accept(listener: Listener, events: queue.Queue) -> None:
    while True:
        try:
            connection = listener.accept()
        except OSError:  # the listener was closed: the sweep is done
            return
        except Exception:  # a failed handshake (wrong key): ignore that caller
            continue
        threading.Thread(target=_read, args=(connection, events), daemon=True).start()


def _read(connection: Connection, events: queue.Queue) -> None:
    try:
        while True:
            connection.recv()
            events.put(("parked", connection))
    except (EOFError, OSError):  # the trial process ended
        return


class _Floor:
    """Who may work now. Jobs start in order, each when the floor is free; then parked processes in turn."""

    def __init__(self, jobs: Sequence[Callable[[], T]]) -> None:
        self.jobs = jobs
        self.results: list[T | None] = [None] * len(jobs)
        self.errors: list[BaseException] = []
        self.events: queue.Queue = queue.Queue()
        self.holder: int | None = None
        self.started = 0
        self.running: set[int] = set()
        self.parked: deque[Connection] = deque()
        self.owner: dict[Connection, int] = {}

    def _job(self, index: int) -> None:
        try:
            self.results[index] = self.jobs[index]()
        except BaseException as exc:  # reported after every job has ended
            self.errors.append(exc)
        finally:
            self.events.put(("ended", index))

    def _hand_over(self) -> None:
        """Give the free floor to the next job to start, else to the longest-parked process."""
        while self.holder is None:
            if self.started < len(self.jobs):
                self.holder = self.started
                self.running.add(self.started)
                threading.Thread(target=self._job, args=(self.started,), daemon=True).start()
                self.started += 1
            elif self.parked:
                connection = self.parked.popleft()
                try:
                    connection.send(_GO)
                except OSError:  # it died while waiting; its job's "ended" event follows
                    continue
                self.holder = self.owner[connection]
            else:
                return

    def run(self) -> list[T | None]:
        self._hand_over()
        while self.running:
            kind, item = self.events.get()
            if kind == "parked":
                # A process speaks only while it holds the floor, so a new connection is the holder's.
                index = self.owner.setdefault(item, self.holder)
                self.parked.append(item)
            else:
                index = item
                self.running.discard(index)
                self.parked = deque(c for c in self.parked if self.owner.get(c) != index)
            if self.holder == index:
                self.holder = None
            self._hand_over()
        if self.errors:
            raise self.errors[0]
        return self.results


def run_interleaved(jobs: Sequence[Callable[[], T]]) -> list[T | None]:
    """Run each job (a call that runs one trial process to its end and returns its result) with the floor
    passed between their processes as the module docstring says; results in the jobs' order."""
    key = secrets.token_bytes(16)
    with _socket_address() as address:
        listener = Listener(_socket(address), family="AF_UNIX", authkey=key)
        floor = _Floor(jobs)
        threading.Thread(target=_accept, args=(listener, floor.events), daemon=True).start()
        try:
            with _environment({ADDRESS_ENV: address, KEY_ENV: key.hex()}):
                return floor.run()
        finally:
            listener.close()


def _socket(address: str) -> str:
    """The address as the socket takes it: a leading '@' (how it travels in the environment, which cannot hold a
    NUL byte) names an abstract socket, whose name starts with NUL."""
    return "\0" + address[1:] if address.startswith("@") else address


@contextmanager
def _socket_address() -> Iterator[str]:
    """On Linux an abstract socket: no file, so nothing is left behind even by a killed sweep, and no limit
    from a long TMPDIR (a socket path may hold 107 bytes); elsewhere a socket file in a temporary folder."""
    if sys.platform.startswith("linux"):
        yield f"@harness-turns-{os.getpid()}-{secrets.token_hex(8)}"  # '@': abstract (see _socket)
        return
    with tempfile.TemporaryDirectory(prefix="harness-turns-") as folder:
        yield str(Path(folder) / "turns.sock")
