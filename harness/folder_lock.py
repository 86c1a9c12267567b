"""One harness process at a time per folder: an exclusive `flock` on a file in it. The kernel drops the lock
when its holder exits, however it exits (kill -9 included), so a lock can never outlive a dead run; a file
descriptor handed to a child process (`pass_fds`) keeps the lock held until both have closed it."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".harness.lock"


class FolderBusyError(RuntimeError):
    """Another live harness process holds the folder."""


class FolderLock:
    """`with FolderLock(folder, what="sweep"):` holds the folder; waits up to `wait_s`, then raises
    FolderBusyError naming the holder's pid and what it is doing."""

    def __init__(self, folder: Path, what: str, wait_s: float = 0.0, name: str = LOCK_NAME) -> None:
        self.folder = Path(folder)
        self.what = what
        self.wait_s = wait_s
        self.name = name  # another name guards another resource in the same folder
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise FolderBusyError(
                        f"{self.folder} is in use by {holder}; wait for it to finish or stop it "
                        f"(a second {self.what} on the same folder would mix their results)"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"harness {self.what}, pid {os.getpid()}".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
