"""Interleaved repeats: the timed repeats of the trials that share an input run in rounds, each round holding one
repeat of every trial being timed and one of the baseline, in an order shuffled per round, so a drift of the
machine (another job, heat, clocks) lands on every trial alike, and each trial's repeat has a baseline repeat of
the same round beside it (harness.noise judges the paired per-round ratios).

Each trial runs in its own fresh process, and its **timed repeats never share the machine**: while one runs,
every other process of the input waits, blocked on a socket. The baseline's process stays alive for the whole
input and is timed in every round; at most `max_processes` processes are alive at once, fewer when the memory
they measured would not fit (each reports, when it parks, the most memory it has held and what the device has
free: GPU memory on CUDA, host memory on the CPU). A new trial starts when one has finished, so memory, not the
number of trials, bounds what is alive.

A trial process's life, and what may run beside what:
1. start-up (imports, loading the models and applying the transforms): with `overlap_startup` it runs beside
   another process's untimed work (its cold run, warm-ups, profiled pass or scoring), never beside a timed
   repeat: no round starts while a start-up is under way. Without it, a start-up holds the floor.
2. `claim_floor()` (harness.turns: the trial process's side), then the cold run and warm-ups, holding the floor
   (alone).
3. `turns()`: before each timed repeat it parks and waits for its slot in a round.
4. told to stop (after its repeats; the baseline after every other trial of the input), it holds the floor for
   its profiled pass and scoring, and gives it up by exiting.

One start-up at a time, and none beside the first process until it has reported its memory; a process not
measured yet is counted at the largest measured so far (plus 20%). The seed of the round orders and every
round's order are returned for the sweep to record (`rounds.json`). Without a coordinator
(`harness run`, `--inline` or `interleave: false` sweeps, Ray) `claim_floor()` does nothing and `turns()` gives
the trial's own number of repeats.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any, Generic, TypeVar
from unittest.mock import patch

from harness.turns import ADDRESS_ENV, KEY_ENV, identity, socket_name

log = logging.getLogger(__name__)

T = TypeVar("T")
MEMORY_RESERVE = 0.10  # of the device's memory, never planned for (other processes, fragmentation)
MEMORY_MARGIN = 1.2  # a trial not started yet may need this much more than the largest one measured so far


@dataclass
class Job(Generic[T]):
    """One trial process of an input: `run()` starts it and returns its result when it has ended."""

    run: Callable[[], T]
    folder: Path
    name: str
    repeats: int
    baseline: bool = False


@dataclass
class Rounds(Generic[T]):
    """What run_interleaved returns: the jobs' results (in their order) and the record of how they ran."""

    results: list[T | None]
    record: dict[str, Any] = field(default_factory=dict)


# A process's states. The floor (working alone) is held in WARMING, TIMING and FINISHING; LOST: its socket
# failed, its end is awaited.
PENDING, PREPARING, READY, WARMING, PARKED, TIMING, FINISHING, LOST, ENDED = (
    "pending",
    "preparing",
    "ready",
    "warming",
    "parked",
    "timing",
    "finishing",
    "lost",
    "ended",
)


class _Coordinator:
    """The schedule of one input's trial processes (see the module doc); events come from the socket readers
    and the job threads, decisions are made in `run`'s thread only."""

    def __init__(
        self, jobs: Sequence[Job], max_processes: int | None, overlap_startup: bool, seed: int
    ) -> None:
        self.jobs = list(jobs)
        self.max_processes = max_processes
        self.overlap = overlap_startup
        self.seed = seed
        self.rng = random.Random(seed)
        self.results: list[Any] = [None] * len(jobs)
        self.errors: list[BaseException] = []
        self.events: queue.Queue = queue.Queue()
        self.state = [PENDING] * len(jobs)
        self.done = [0] * len(jobs)  # timed repeats handed out
        self.held_mb: dict[int, float] = {}  # the most each process has held, as it reported
        self.free_mb: float | None = None  # the device's free memory at the latest report
        self.total_mb: float | None = None
        self.connections: dict[int, Connection] = {}
        self.index = {identity(job.folder): i for i, job in enumerate(jobs)}
        self.holder: int | None = None
        self.round: list[int] = []  # who is still to go in the round under way
        self.round_id = ""
        self.orders: list[list[str]] = []

    # -- events

    def _job(self, index: int) -> None:
        try:
            self.results[index] = self.jobs[index].run()
        except BaseException as exc:  # reported after every job has ended
            self.errors.append(exc)
        finally:
            self.events.put(("ended", index, None, None))

    def _on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        index = self.index.get(str(message.get("folder")))
        if index is None or self.state[index] in (PENDING, LOST, ENDED):
            log.warning("interleaved sweep: a message from no trial of this input: %r", message)
            return
        self.connections[index] = connection
        if message.get("kind") == "ready":
            if self.state[index] == WARMING:  # started holding the floor: go on at once
                self._send(index, {"go": True})
            else:
                self.state[index] = READY
            return
        memory = message.get("memory") or {}
        if "held_mb" in memory:
            self.held_mb[index] = max(self.held_mb.get(index, 0.0), float(memory["held_mb"]))
        if "free_mb" in memory:
            self.free_mb, self.total_mb = float(memory["free_mb"]), float(memory.get("total_mb", 0.0))
        self.state[index] = PARKED
        if self.holder == index:
            self.holder = None

    def _on_ended(self, index: int) -> None:
        self.state[index] = ENDED
        if self.holder == index:
            self.holder = None

    def _send(self, index: int, message: dict[str, Any]) -> bool:
        try:
            self.connections[index].send(message)
            return True
        except OSError:  # it died while waiting; its "ended" event follows
            self.state[index] = LOST
            return False

    # -- decisions

    def _alive(self) -> list[int]:
        return [i for i, s in enumerate(self.state) if s not in (PENDING, ENDED)]

    def _finished_timing(self, index: int) -> bool:
        if self.done[index] < self.jobs[index].repeats:
            return False
        if not self.jobs[index].baseline:
            return True
        # the baseline is timed beside every other trial of the input: it stops when none has repeats left
        return all(
            s == ENDED or self.done[i] >= self.jobs[i].repeats for i, s in enumerate(self.state) if i != index
        )

    def _need_mb(self) -> float | None:
        return max(self.held_mb.values()) * MEMORY_MARGIN if self.held_mb else None

    def _fits(self) -> bool:
        """Whether one more process fits beside the ones alive, by the memory they reported."""
        alive = self._alive()
        if self.max_processes is not None and len(alive) >= self.max_processes:
            return False
        if not alive:
            return True
        need = self._need_mb()
        if need is None or self.free_mb is None:
            return False  # nothing measured yet: wait for the first process to report
        if not any(not self.jobs[i].baseline for i in alive):
            return True  # the baseline alone: a trial must run beside it, whatever the estimate says
        unreported = [i for i in alive if i not in self.held_mb]
        reserve = MEMORY_RESERVE * (self.total_mb or 0.0)
        return self.free_mb - reserve - need * len(unreported) >= need

    def _admit(self) -> bool:
        """Start the next process when it fits and no other start-up is under way."""
        pending = [i for i, s in enumerate(self.state) if s == PENDING]
        starting = [i for i in self._alive() if self.state[i] in (PREPARING, READY)]
        if not pending or starting or self.round or not self._fits():
            return False
        if not self.overlap and self.holder is not None:
            return False
        index = pending[0]
        if self.overlap:
            self.state[index] = PREPARING
        else:
            self.state[index], self.holder = WARMING, index
        threading.Thread(target=self._job, args=(index,), daemon=True).start()
        return True

    def _step(self) -> None:
        """Hand the floor on: the next member of the round under way; between rounds, a finished process (to
        its profiled pass and scoring), a started one (to its cold run), a new admission, or a new round."""
        while self.holder is None and (self._next_in_round() if self.round else self._between_rounds()):
            pass
        if self.overlap and self.holder is not None and self.state[self.holder] in (WARMING, FINISHING):
            self._admit()  # the next start-up, beside this untimed work

    def _give(self, index: int, message: dict[str, Any], state: str) -> None:
        if self._send(index, message):
            self.state[index], self.holder = state, index

    def _next_in_round(self) -> bool:
        index = self.round.pop(0)
        if self.state[index] == PARKED:  # not ended meanwhile
            self._give(index, {"round": self.round_id}, TIMING)
            self.done[index] += self.holder == index
        return True

    def _between_rounds(self) -> bool:
        """One decision between rounds; False when there is nothing to do but wait for an event."""
        parked = [i for i, s in enumerate(self.state) if s == PARKED]
        finished = [i for i in parked if self._finished_timing(i)]
        ready = [i for i, s in enumerate(self.state) if s == READY]
        if finished:
            self._give(finished[0], {"round": None}, FINISHING)
        elif ready:
            self._give(ready[0], {"go": True}, WARMING)
        elif self._admit():
            pass
        elif parked and PREPARING not in self.state:  # no round beside a start-up
            self._start_round(parked)
        else:
            return False
        return True

    def _start_round(self, members: list[int]) -> None:
        self.rng.shuffle(members)
        self.round = members
        self.round_id = f"{self.seed:08x}-{len(self.orders) + 1}"
        self.orders.append([self.jobs[i].name for i in members])

    def run(self) -> Rounds:
        self._step()
        while any(s != ENDED for s in self.state):
            kind, index, connection, message = self.events.get()
            if kind == "message":
                self._on_message(connection, message)
            else:
                self._on_ended(index)
            self._step()
        if self.errors:
            raise self.errors[0]
        record = {
            "seed": self.seed,
            "max_processes": self.max_processes,
            "overlap_startup": self.overlap,
            "largest_process_mb": max(self.held_mb.values(), default=None),
            "rounds": self.orders,
        }
        return Rounds(self.results, record)


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
            events.put(("message", None, connection, connection.recv()))
    except (EOFError, OSError):  # the trial process ended
        return


def run_interleaved(
    jobs: Sequence[Job[T]],
    max_processes: int | None = None,
    overlap_startup: bool = True,
    seed: int | None = None,
) -> Rounds[T]:
    """Run one input's trial processes as the module doc says (the baseline's job first); results in the jobs'
    order. max_processes: at most this many alive at once (None: as many as their memory allows); seed: of the
    round orders (default a fresh random one; recorded either way)."""
    if max_processes is not None and max_processes < 2:
        raise ValueError(f"max_processes must be at least 2 (the baseline and a trial), got {max_processes}")
    seed = secrets.randbits(32) if seed is None else seed
    key = secrets.token_bytes(16)
    with _socket_address() as address:
        listener = Listener(socket_name(address), family="AF_UNIX", authkey=key)
        coordinator = _Coordinator(jobs, max_processes, overlap_startup, seed)
        threading.Thread(target=_accept, args=(listener, coordinator.events), daemon=True).start()
        try:
            with patch.dict(os.environ, {ADDRESS_ENV: address, KEY_ENV: key.hex()}):
                return coordinator.run()
        finally:
            listener.close()


@contextmanager
def _socket_address() -> Iterator[str]:
    """On Linux an abstract socket: no file, so nothing is left behind even by a killed sweep, and no limit
    from a long TMPDIR (a socket path may hold 107 bytes); elsewhere a socket file in a temporary folder."""
    if sys.platform.startswith("linux"):
        yield f"@harness-turns-{os.getpid()}-{secrets.token_hex(8)}"  # '@': abstract (see socket_name)
        return
    with tempfile.TemporaryDirectory(prefix="harness-turns-") as folder:
        yield str(Path(folder) / "turns.sock")
