"""One ``boltwatch run`` per store folder: an exclusive lock on ``STORE/LOCK``.

Two services on one store would both write it (SQLite lets them, one transaction after the
other) and both subscribe to the broker with the same client id, each pushing the other off. The
lock is an ``flock`` on the file ``LOCK`` in the store folder, held for the life of the service:
the kernel releases it when the process ends, however it ends (``kill -9`` included), so there is
never a stale lock to remove by hand. The holder writes its process id into the file, for the
error message of the next one. Reading commands (``stats``, ``export``, ``deadletters``) do not
take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from ingest.store import StoreError

__all__ = ["LOCK_FILE", "StoreInUseError", "StoreLock"]

LOCK_FILE: Final = "LOCK"


class StoreInUseError(StoreError):
    """Another process holds the store's lock.

    Attributes:
        pid: The holder's process id, as it wrote it into the lock file (None when unreadable).
    """

    def __init__(self, path: str | os.PathLike[str], pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(path, f"in use by another boltwatch ({who})")
        self.pid = pid

    def __str__(self) -> str:
        return f"store {self.path} is {self.reason}"

    def __reduce__(self) -> tuple[type[StoreInUseError], tuple[Path, int | None]]:  # type: ignore[override]
        return (type(self), (self.path, self.pid))


class StoreLock:
    """The exclusive lock of a store folder (created if missing), as a context manager.

    Args:
        folder: The store folder.

    Raises:
        StoreInUseError: From :meth:`acquire`: another process holds the lock.
        StoreError: From :meth:`acquire`: the folder cannot be created or the lock file written.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.file = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, without waiting; write this process's id into the lock file."""
        if self._fd is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise StoreError(self.folder, "exists and is not a folder") from exc
        except OSError as exc:
            raise StoreError(self.folder, f"cannot create the store folder: {exc}") from exc
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(self.file, f"cannot open the lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _pid_in(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreInUseError(self.folder, holder) from None
            raise StoreError(self.file, f"cannot lock: {exc}") from exc
        # Without the pid (a full disk) the lock still holds; only the next one's message lacks it.
        with contextlib.suppress(OSError):
            line = f"{os.getpid()}\n".encode()
            os.pwrite(fd, line, 0)
            os.ftruncate(fd, len(line))
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (idempotent). The file stays: removing it would race a new holder."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _pid_in(fd: int) -> int | None:
    """The process id written in the lock file, if it reads as one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
