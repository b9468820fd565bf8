"""What systemd gives a service, and what it expects back: socket activation, readiness and
the watchdog.

Both follow sd_listen_fds(3) and sd_notify(3); ``systemd.daemon`` (systemd-python) does the
protocol when it is installed. The socket units name their sockets (``FileDescriptorName=``),
so the client and admin sockets are told apart by ``LISTEN_FDNAMES``; without names (an old
systemd, or a hand-made ``LISTEN_FDS``) the socket's own address decides.
"""
from __future__ import annotations

import os
import socket
from typing import Dict, List, Mapping, Optional

LISTEN_FDS_START = 3
CLIENT, ADMIN, SYSLOG = "virlogd", "virlogd-admin", "virlogd-syslog"


def activated_sockets(env: Optional[Mapping[str, str]] = None,
                      expected: Optional[Dict[str, str]] = None) -> Dict[str, socket.socket]:
    """The sockets systemd passed us, by role (``CLIENT``, ``ADMIN``, ``SYSLOG``).

    *expected* maps role -> configured path, used when a socket has no name. The variables
    are removed afterwards so children do not inherit them (as sd_listen_fds(1) does).
    """
    env = os.environ if env is None else env
    if env.get("LISTEN_PID", "") != str(os.getpid()):
        return {}
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return {}
    names: List[str] = env.get("LISTEN_FDNAMES", "").split(":") if count else []
    found: Dict[str, socket.socket] = {}
    for index in range(count):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        name = names[index] if index < len(names) else ""
        role = name if name in (CLIENT, ADMIN, SYSLOG) else _role_by_address(sock, expected)
        if role is None or role in found:
            sock.close()                  # a socket we do not know: do not hold it open
            continue
        found[role] = sock
    if env is os.environ:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
    return found


def _role_by_address(sock: socket.socket, expected: Optional[Dict[str, str]]) -> Optional[str]:
    try:
        address = sock.getsockname()
    except OSError:
        return None
    for role, path in (expected or {}).items():
        if path and address == path:
            return role
    # no name and no match: a datagram socket can only be the syslog input, the first
    # stream socket is the client socket (the order of the .socket units' Sockets=)
    if sock.type == socket.SOCK_DGRAM:
        return SYSLOG
    return CLIENT if not address or address != (expected or {}).get(ADMIN) else ADMIN


def watchdog_interval(env: Optional[Mapping[str, str]] = None,
                      pid: Optional[int] = None) -> Optional[float]:
    """Seconds between two ``WATCHDOG=1``, or None when the service manager wants none.

    As sd_watchdog_enabled(3): ``WATCHDOG_USEC`` is the unit's ``WatchdogSec=`` in
    microseconds, and ``WATCHDOG_PID``, when set, names the process it is meant for (not a
    child that inherited it). Pinging at half the interval, as that page advises, leaves a
    whole half for a slow wake-up."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wanted = env.get("WATCHDOG_PID", "")
    if wanted and wanted != str(os.getpid() if pid is None else pid):
        return None
    return usec / 2e6


def notify(message: str) -> bool:
    """Send *message* to ``$NOTIFY_SOCKET``; False when not under a service manager."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        from systemd import daemon as sd_daemon
    except ImportError:  # pragma: no cover - systemd-python is a dependency
        return _notify_raw(message)
    try:
        return bool(sd_daemon.notify(message))
    except OSError:
        return False


def _notify_raw(message: str) -> bool:  # pragma: no cover - used without systemd-python
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True
