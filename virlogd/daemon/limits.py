"""Descriptors as a budget: how many clients the daemon can hold open at once.

Every connected client costs one descriptor, and so does each of the daemon's own things:
the standard streams, the event loop, the ring file, the listening sockets, each output.
Under systemd a service starts with a soft ``RLIMIT_NOFILE`` of 1,024 and is expected to
raise it to the hard limit itself; a shell gives the same 1,024. Started like that with the
default ``max_clients = 1024``, the daemon would run out of descriptors before its own cap
refused anyone. So the soft limit is raised first, and the client cap is kept below what the
limit leaves after the daemon's own descriptors and a reserve (``RESERVE``) for what comes
and goes: admin connections, a file output reopened after rotation, a dump's fallback file,
the accepted-then-refused connection of a client over the cap.

The arithmetic is pure (``client_cap``, ``own_estimate``, ``does_not_fit``) so that
``--check-config`` and the running daemon say the same thing; only ``raise_nofile`` and
``open_descriptors`` look at the process.
"""
from __future__ import annotations

import os
import resource
from typing import Optional, Tuple

RESERVE = 32            # descriptors kept free beyond the daemon's own and its clients'
_NR_OPEN = "/proc/sys/fs/nr_open"


def raise_nofile() -> Tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the (soft, hard) now in force.

    Never fails: a limit that cannot be raised is simply the one in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:     # the kernel caps the soft limit at nr_open
        try:
            with open(_NR_OPEN) as handle:
                target = int(handle.read())
        except (OSError, ValueError):
            target = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def soft_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _finite(soft)


def hard_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _finite(hard)


def _finite(limit: int) -> int:
    return 2**31 - 1 if limit == resource.RLIM_INFINITY else limit


def open_descriptors() -> Optional[int]:
    """How many descriptors this process has open now (None when /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1      # less the one listdir used
    except OSError:
        return None


def own_estimate(outputs: int, *, ring: bool, syslog: bool) -> int:
    """The daemon's own descriptors, for ``--check-config`` (which starts nothing): the
    three standard streams, the loop (epoll and its wake-up pipe), the client and admin
    sockets, the spare descriptor that refuses clients when none is left, the ring file,
    the syslog input, one per output."""
    return 3 + 3 + 2 + 1 + int(ring) + int(syslog) + max(outputs, 1)


def client_cap(max_clients: int, limit: int, own: int) -> int:
    """The client cap that fits *limit* descriptors when the daemon uses *own* of them
    (never below 1: a daemon that can serve nobody is no use, and running out is handled
    anyway)."""
    return max(1, min(max_clients, limit - own - RESERVE))


def does_not_fit(max_clients: int, limit: int, own: int, *, would: str = "serves") -> \
        Optional[str]:
    """The sentence saying that *max_clients* does not fit, or None when it does."""
    cap = client_cap(max_clients, limit, own)
    if cap >= max_clients:
        return None
    return (f"max_clients = {max_clients} does not fit the descriptor limit "
            f"(RLIMIT_NOFILE {limit}: {own} used by the daemon itself, {RESERVE} kept in "
            f"reserve): virlogd {would} at most {cap} clients; raise the limit "
            f"(LimitNOFILE= in the unit, ulimit -n) or lower max_clients")


def check_settings(settings) -> Optional[str]:
    """For ``--check-config``: whether ``max_clients`` fits this process's hard limit (the
    daemon raises its soft limit to it), with the daemon's own descriptors estimated."""
    own = own_estimate(len(settings.outputs), ring=settings.log_buffer_size > 0,
                       syslog=bool(settings.syslog_socket_path))
    return does_not_fit(settings.max_clients, hard_limit(), own, would="would serve")
