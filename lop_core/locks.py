"""Run locks: one process trains a run at a time.

A lock is an exclusive ``flock`` on ``runs/<benchmark>/.checkpoints/<run>.lock``, taken before a
run is trained and dropped when its holder exits, even by SIGKILL (the kernel releases it), so a
killed run can be resumed at once while a second process started on a running one stops with a
clear message. ``flock`` works on local disks and on NFS (Linux emulates it with POSIX locks), so
Slurm jobs on several nodes exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from lop_core.errors import RunLocked

#: Set by a process that holds run locks for a child it starts (the experiment notebook's kernel):
#: the child may then train those runs. The value is the holder's ``lock_owner()``.
LOCK_OWNER_ENV = "LOP_LOCK_OWNER"


def lock_owner() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def lock_path(path: Path) -> Path:
    """The lock file of the run folder ``path`` (beside the population checkpoints)."""
    return path.parent / ".checkpoints" / f"{path.name}.lock"


def _try_lock(lock: Path, tries: int = 5) -> int | str:
    """A descriptor holding an exclusive ``flock`` on ``lock``, or the holder's ``lock_owner()``.

    A few tries a tenth of a second apart, so that a ``status`` probe holding the lock for a moment
    is not mistaken for a training process.
    """
    holder = "another process"
    for _ in range(tries):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or holder
            os.close(fd)
            time.sleep(0.1)
            continue
        try:  # the previous holder unlinks the file on release: our lock must be on the file on disk
            current = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, lock_owner().encode(), 0)
            return fd
        os.close(fd)
    return holder


@contextmanager
def locked(paths: list[Path]):
    """Hold the lock of every run folder in ``paths`` for the body (exclusive, never waiting).

    Locks are ``flock`` locks on files in ``.checkpoints/``; the kernel drops them when the holder
    dies, even by SIGKILL, so a killed run can be resumed at once. Works on local disks and NFS.

    Raises:
        RunLocked: another process holds one of the locks; nothing is held or written then.
    """
    held: list[tuple[Path, int]] = []
    try:
        for path in sorted(paths):
            lock = lock_path(path)
            lock.parent.mkdir(parents=True, exist_ok=True)
            got = _try_lock(lock)
            if isinstance(got, str):
                if got == os.environ.get(LOCK_OWNER_ENV):
                    continue  # our parent holds it for us
                raise RunLocked(
                    f"run {path.name} is being trained by another process ({got}; lock {lock}). "
                    "Wait for it to finish or stop it: a stopped run resumes from its checkpoint."
                )
            held.append((lock, got))
        yield lock_owner()
    finally:
        for lock, fd in held:
            lock.unlink(missing_ok=True)
            os.close(fd)


def remove_stale(path: Path) -> None:
    """Delete the lock file of run folder ``path`` if no process holds it (one left by a killed
    holder), as a holder does on release: take the lock first, so that a live holder keeps it."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDWR)  # for writing: NFS emulates flock with POSIX locks
    except OSError:
        return  # none, or a read-only store
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(lock)):
            lock.unlink()
    except OSError:
        pass  # held, removed meanwhile, or a read-only store: leave it
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether a process holds the lock of run folder ``path`` right now (never creates a lock)."""
    try:
        fd = os.open(lock_path(path), os.O_RDWR)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
