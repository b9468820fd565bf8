"""Who is at the other end of a connected AF_UNIX socket: the kernel's ``SO_PEERCRED``.

Both daemon sockets trust only this, never what a peer says about itself: the client socket
stamps every record with it, and the admin socket serves the daemon's own uid alone.
"""
from __future__ import annotations

import socket
import struct
from typing import Tuple

_UCRED = struct.Struct("3i")        # struct ucred: pid, uid, gid


def peer_credentials(conn: socket.socket) -> Tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected *conn*, as of its ``connect``;
    raises OSError (the peer may already be gone)."""
    pid, uid, gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid
