"""The pid file: claimed only when no live virlogd holds it.

A pid file left by a killed run (SIGKILL, power loss) must not block the next start, and a
second instance must be refused. The rule: the file names a pid; if that process is alive and
is a virlogd, refuse; otherwise the file is stale and is replaced.
"""
from __future__ import annotations

import os
from typing import Optional


class PidFileBusy(Exception):
    pass


def holder(path: str) -> Optional[int]:
    """The pid of the live virlogd named by *path*, or None if the file is absent or stale."""
    try:
        with open(path) as handle:
            pid = int(handle.read().strip() or "0")
    except (OSError, ValueError):
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
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(tmp, path)                # atomic: a reader never sees a half-written pid


def release(path: str) -> None:
    if holder_is_me(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def holder_is_me(path: str) -> bool:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or "0") == os.getpid()
    except (OSError, ValueError):
        return False
