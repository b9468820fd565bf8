"""Whether a live process serves an AF_UNIX socket path.

A socket file alone proves nothing: a killed process leaves its file behind. Both the default
output's choice of journald (``defaults.journal_writable``) and the daemon's own binding
(``daemon.sockets``: replace a stale socket, refuse a live one) ask this, so it lives below
both.
"""
from __future__ import annotations

import socket


def listening(path: str, kind: int = socket.SOCK_STREAM) -> bool:
    """True when a live process serves *path*: try to connect (a datagram socket's
    ``connect`` is refused too when nobody has it bound)."""
    with socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
