"""Three stages over a stream of items, overlapped: `prepare` in a thread, `middle` in the calling thread, `finish`
in another thread, joined by bounded queues.

The lip-sync run uses it to keep the GPU busy: reading, detection and alignment of the next segments (prepare),
and restore and H.264 writing of the last ones (finish) run while the calling thread denoises (middle). Each
stage still sees the items one at a time and in their order, so a stage that carries state from item to item
(alignment's smoothing, the VAE's sampling generator, the writer) computes exactly what it computes serially.

Queues hold `depth` items each, so at most 2 * depth + 3 items are alive at once: host memory stays bounded.
On CUDA each worker thread issues its GPU work on a stream of its own, so its copies and syncs wait for its own
work and never for the denoising queued on the main stream. Every hand-over is safe by construction: `prepare`'s
results are complete (its stream synchronised) before they are queued, `middle`'s reach `finish` behind an
event, and every CUDA tensor an item carries is marked as used by the receiving stage's stream
(`record_stream`), so the caching allocator cannot give its memory to the producing stream's next allocation
while the receiver's kernels may still read it. The first error in any stage stops all three and is raised in
the calling thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

_DONE = object()
_POLL_S = 0.1  # how often a blocked put/get looks whether another stage failed


class _Stop(Exception):
    """Another stage failed; this one leaves quietly."""


class _Channel:
    """A bounded queue whose put/get give up once any stage has failed."""

    def __init__(self, depth: int, failed: threading.Event) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._failed = failed

    def put(self, item: Any) -> None:
        while True:
            if self._failed.is_set():
                raise _Stop
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while True:
            if self._failed.is_set():
                raise _Stop
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue


def _stream_scope(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type != "cuda":
        return contextlib.nullcontext()
    # The current GPU is per thread and a new thread starts on GPU 0: under torchrun, rank 1's worker threads
    # would otherwise put their tensors on rank 0's GPU.
    torch.cuda.set_device(device)
    return torch.cuda.stream(torch.cuda.Stream(device))


def tensors_in(item: Any) -> Iterator[torch.Tensor]:
    """Every tensor an item holds: itself, or inside lists, tuples, dicts and dataclass or plain objects' fields."""
    if isinstance(item, torch.Tensor):
        yield item
    elif isinstance(item, (list, tuple)):
        for part in item:
            yield from tensors_in(part)
    elif isinstance(item, dict):
        for part in item.values():
            yield from tensors_in(part)
    elif hasattr(item, "__dict__") and not isinstance(item, type):
        for part in vars(item).values():
            yield from tensors_in(part)


def _adopt(item: Any, device: torch.device) -> None:
    """Mark the item's CUDA tensors as used by this thread's stream (see the module's docstring)."""
    if device.type != "cuda":
        return
    stream = torch.cuda.current_stream(device)
    for tensor in tensors_in(item):
        if tensor.is_cuda:
            tensor.record_stream(stream)


def _sync_stream(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def run_overlapped(
    items: Iterable[Any],
    prepare: Callable[[Any], Any],
    middle: Callable[[Any], Any],
    finish: Callable[[Any], None],
    device: torch.device | str = "cpu",
    depth: int = 1,
) -> None:
    """finish(middle(prepare(item))) for every item, in order, with the three stages overlapped (see module).
    A CUDA device without an index means the calling thread's current GPU, for the worker threads too."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    _Overlap(prepare, middle, finish, device, depth).run(items)


class _Overlap:
    def __init__(
        self,
        prepare: Callable[[Any], Any],
        middle: Callable[[Any], Any],
        finish: Callable[[Any], None],
        device: torch.device,
        depth: int,
    ) -> None:
        self.prepare, self.middle, self.finish, self.device = prepare, middle, finish, device
        self.failed = threading.Event()
        self.errors: list[BaseException] = []
        self.prepared = _Channel(depth, self.failed)
        self.finished = _Channel(depth, self.failed)

    def run(self, items: Iterable[Any]) -> None:
        workers = [
            threading.Thread(
                target=self._guard(lambda: self._produce(items)), name="stage-prepare", daemon=True
            ),
            threading.Thread(target=self._guard(self._consume), name="stage-finish", daemon=True),
        ]
        for worker in workers:
            worker.start()
        try:
            self._middle()
        except _Stop:
            pass
        except BaseException:
            self.failed.set()
            raise
        finally:
            for worker in workers:
                # a failed or interrupted run stops the workers through `failed`; a good one waits for finish
                worker.join()
        if self.errors:
            raise self.errors[0]

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                with _stream_scope(self.device):
                    body()
            except _Stop:
                pass
            except BaseException as exc:  # handed to the calling thread, which raises it
                self.errors.append(exc)
                self.failed.set()

        return run

    def _produce(self, items: Iterable[Any]) -> None:
        for item in items:
            out = self.prepare(item)
            _sync_stream(self.device)  # its GPU results are complete before another stream reads them
            self.prepared.put(out)
        self.prepared.put(_DONE)

    def _middle(self) -> None:
        for item in _drain(self.prepared):
            _adopt(item, self.device)
            out = self.middle(item)
            ready = None
            if self.device.type == "cuda":
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(self.device))
            self.finished.put((out, ready))
        self.finished.put(_DONE)

    def _consume(self) -> None:
        for item, ready in _drain(self.finished):
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready)
            _adopt(item, self.device)
            self.finish(item)
            _sync_stream(self.device)  # done with middle's tensors before they are freed


def _drain(channel: _Channel) -> Iterator[Any]:
    while (item := channel.get()) is not _DONE:
        yield item
