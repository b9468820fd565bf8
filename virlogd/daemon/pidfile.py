"""The pid file: claimed only when no live virlogd holds it.

A pid file left by a killed run (SIGKILL, power loss) must not block the next start, and a
second instance must be refused. The rule: the file names a pid; if that process is alive and
is a virlogd, refuse; otherwise the file is stale and is replaced.

The file is written without following a symlink: a fresh temporary file
(``O_EXCL | O_NOFOLLOW``) renamed over the path, which replaces a symlink found there instead
of writing through it; it is read with ``O_NOFOLLOW`` too.
"""
from __future__ import annotations

import os
from typing import Optional


class PidFileBusy(Exception):
    """The pid file cannot be claimed (held by a live virlogd, or unsafe/unwritable): the
    start is refused with ``str()``, the sentence alone."""


def _read_pid(path: str) -> int:
    """The number in *path*; not through a symlink, and never waiting on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return int(os.read(fd, 64).decode("ascii").strip() or "0")
    finally:
        os.close(fd)


def holder(path: str) -> Optional[int]:
    """The pid of the live virlogd named by *path*, or None if the file is absent or stale."""
    try:
        pid = _read_pid(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return None                      # no such process
    return pid if b"virlogd" in cmdline else None   # a reused pid is not our daemon


def claim(path: str) -> None:
    """Write our pid to *path*; raise PidFileBusy naming the live holder."""
    pid = holder(path)
    if pid is not None:
        raise PidFileBusy(f"another virlogd is running (pid {pid}, pid file {path})")
    try:
        _write(path)
    except OSError as err:
        raise PidFileBusy(f"cannot write the pid file {path}: {err.strerror or err}") \
            from None


def _write(path: str) -> None:
    # the default pid file sits in the checked runtime directory; one named with -p may be
    # anywhere (even /tmp), which the exclusive, no-follow creation below keeps safe
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileExistsError:              # left by a killed run that had our pid
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)                # atomic: a reader never sees a half-written pid


def release(path: str) -> None:
    if holder_is_me(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def holder_is_me(path: str) -> bool:
    try:
        return _read_pid(path) == os.getpid()
    except (OSError, ValueError, UnicodeDecodeError):
        return False
