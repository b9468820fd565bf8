"""Listening sockets the daemon binds itself (outside socket activation).

A path that already holds a socket is either a live daemon (refuse: two daemons on one
socket would split the stream between them) or the leftover of a killed one (replace it).
Modes are set before anyone can connect: the socket is created under a tight umask, then
opened up with chmod, so there is no window in which it has the wrong mode.

The directory is checked first (``safepath.runtime_dir_for``: ours or root's, writable by
nobody else), so nobody can plant a symlink at the path; a symlink found there anyway is
refused, never followed or removed.
"""
from __future__ import annotations

import grp
import os
import socket
import stat
from typing import Optional

from ..core import safepath
from ..core.unixsocket import listening

__all__ = ["SocketInUse", "bind_unix", "listening"]


class SocketInUse(OSError):
    """A live process already serves the path; ``str()`` is the sentence alone."""

    def __str__(self) -> str:
        return str(self.strerror if self.strerror is not None else self.args[0])


def bind_unix(path: str, kind: int = socket.SOCK_STREAM, *, mode: int = 0o666,
              group: Optional[str] = None, backlog: int = 128) -> socket.socket:
    """A listening (stream) or bound (datagram) AF_UNIX socket at *path*, created with
    *mode* and *group*; raises SocketInUse if a live process already serves *path*."""
    safepath.runtime_dir_for(path)
    _clear_stale(path, kind)
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        if group is not None:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        os.chmod(path, mode)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _clear_stale(path: str, kind: int) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise SocketInUse(0, f"{path} is a symbolic link; refusing to follow or remove it")
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketInUse(0, f"{path} exists and is not a socket")
    if not listening(path, kind):
        os.unlink(path)                   # nobody answers: left over by a killed run
        return
    raise SocketInUse(0, f"another virlogd is already listening on {path}")
