"""One writer per directory: an exclusive lock held for the whole run, released on exit or crash.

Two ``fastxlt run`` processes writing into one run directory would interleave checkpoints, models and
tables without either noticing. ``DirectoryLock`` makes the second one refuse (or wait, for the grid's
per-phase locks) with a one-line ``RunLockedError`` that names the holder:

    with DirectoryLock(run_dir, what="run directory", fix="use another run_dir"):
        ...  # this process is the only writer of run_dir

The lock is ``fcntl.flock`` on ``<dir>/.lock``. The kernel drops it when the holding process dies, however
it dies, so a SIGKILLed run never leaves a lock that blocks the next one. The file also records the
holder's pid, host and start time, for the refusal message and so that a later holder can say that the
previous one ended without releasing. The file itself is never deleted: unlinking a flock-ed file lets a
waiter lock the old inode while a newcomer locks a new one, and both would believe they are alone.

On a filesystem without flock (some network or FUSE mounts) the lock falls back to an exclusively
created ``<dir>/.lock.held`` file; there a holder recorded as a dead pid on this host is stale, and is
taken over with a note.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastxlt.errors import RunLockedError

LOCK_FILENAME = ".lock"
FALLBACK_FILENAME = ".lock.held"
NO_FLOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock: enough to tell a user whom to wait for."""

    pid: int
    host: str
    since: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %z"))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder recorded in a lock file; None for an empty or unreadable record."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.since}"

    def is_dead_here(self) -> bool:
        """True only when the holder ran on this host and its pid no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by another user
            return False
        return False


class DirectoryLock:
    """An exclusive, process-wide lock on a directory (created if missing).

    ``blocking`` and ``timeout`` set what ``with lock:`` does; ``acquire`` can override them. Not
    re-entrant: a second lock on the same directory, even in the same process, is refused.
    """

    def __init__(
        self,
        path: str | Path,
        what: str = "run directory",
        *,
        fix: str = "use another directory",
        blocking: bool = False,
        timeout: float | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.fix = fix
        self.blocking = blocking
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._fd: int | None = None
        self._fallback: Path | None = None

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILENAME

    @property
    def held(self) -> bool:
        return self._fd is not None or self._fallback is not None

    def acquire(self, blocking: bool | None = None, timeout: float | None = None) -> DirectoryLock:
        """Take the lock, or raise ``RunLockedError`` naming the holder.

        Non-blocking by default; ``blocking=True`` waits (up to ``timeout`` seconds when given),
        polling, and says once on stderr whom it is waiting for.
        """
        if self.held:
            raise RuntimeError(f"{self.what} lock on '{self.path}' is already held by this object")
        blocking = self.blocking if blocking is None else blocking
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            locked = self._wait(fd, blocking, deadline, timeout)
        except BaseException:
            os.close(fd)
            raise
        if not locked:  # no flock on this filesystem
            os.close(fd)
            self._acquire_fallback(blocking, deadline, timeout)
            return self
        self._fd = fd
        previous = Holder.parse(_read_all(fd))
        if previous is not None and previous.pid != os.getpid():
            _say(f"note: the previous holder of {self.what} '{self.path}' ({previous.describe()}) ended without "
                 "releasing it (a crash or a kill); its stale lock is taken over")
        _rewrite(fd, json.dumps(asdict(Holder.this_process())))
        return self

    def release(self) -> None:
        """Give the lock up (idempotent); the process exiting releases it too."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                _rewrite(fd, "")  # empty record: released cleanly
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        if self._fallback is not None:
            marker, self._fallback = self._fallback, None
            marker.unlink(missing_ok=True)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    # ------------------------------------------------------------------------------------- internals

    def _wait(self, fd: int, blocking: bool, deadline: float | None, timeout: float | None) -> bool:
        """flock ``fd``, polling while blocked; False when the filesystem has no flock."""
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                holder = Holder.parse(_read_all(fd))
            except OSError as error:
                if error.errno in NO_FLOCK_ERRNOS:
                    return False
                raise
            announced = self._pause_or_refuse(holder, blocking, deadline, timeout, announced)

    def _pause_or_refuse(
        self, holder: Holder | None, blocking: bool, deadline: float | None, timeout: float | None, announced: bool
    ) -> bool:
        """Sleep one poll interval, or raise when not waiting (any more); returns whether the wait was announced."""
        if not blocking or (deadline is not None and time.monotonic() >= deadline):
            raise RunLockedError(self._refusal(holder, timeout if blocking else None))
        if not announced:
            who = holder.describe() if holder else "another process"
            _say(f"waiting for {self.what} '{self.path}', in use by {who}")
        remaining = self.poll_interval if deadline is None else max(0.0, min(self.poll_interval, deadline - time.monotonic()))
        time.sleep(remaining)
        return True

    def _refusal(self, holder: Holder | None, waited: float | None) -> str:
        who = holder.describe() if holder else "another process"
        after = f" (waited {waited:g}s)" if waited is not None else ""
        return f"{self.what} '{self.path}' is in use by {who}{after}; wait for it to finish or {self.fix}"

    def _acquire_fallback(self, blocking: bool, deadline: float | None, timeout: float | None) -> None:
        """Exclusive creation of ``.lock.held``; a record of a dead pid on this host is stale and removed."""
        marker = self.path / FALLBACK_FILENAME
        announced = False
        while True:
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = Holder.parse(_read_text(marker))
                if holder is not None and holder.is_dead_here():
                    _say(f"note: {self.what} '{self.path}' was locked by {holder.describe()}, which is no longer "
                         "running; its stale lock is removed")
                    marker.unlink(missing_ok=True)
                    continue
                announced = self._pause_or_refuse(holder, blocking, deadline, timeout, announced)
                continue
            try:
                os.write(fd, json.dumps(asdict(Holder.this_process())).encode())
            finally:
                os.close(fd)
            self._fallback = marker
            return


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _rewrite(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode("utf-8"))


def _say(message: str) -> None:
    print(f"fastxlt: {message}", file=sys.stderr, flush=True)
