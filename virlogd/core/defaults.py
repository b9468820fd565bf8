"""Default paths (root vs. other users) and the default output (``default_output``).

Pure functions of the environment they are given, so tests can ask "what would root get".
"""
from __future__ import annotations

import os
import socket
import stat
import sys
from typing import List, Mapping, Optional

from .unixsocket import listening
from .specs import OutputSpec

JOURNAL_SOCKET = "/run/systemd/journal/socket"

Env = Optional[Mapping[str, str]]   # None: os.environ
Uid = Optional[int]                 # None: os.geteuid()


def _env(env: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if env is None else env


def _is_root(uid: Optional[int]) -> bool:
    return (os.geteuid() if uid is None else uid) == 0


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> str:
    value = env.get(name, "")
    return value if os.path.isabs(value) else os.path.join(
        env.get("HOME") or os.path.expanduser("~"), fallback)


def runtime_dir(env: Env = None, uid: Uid = None) -> str:
    env = _env(env)
    if _is_root(uid):
        return "/run/virlogd"
    base = env.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(base):
        # no session runtime dir (cron, su without a login): a per-user directory, whose name
        # anyone can take first: the daemon refuses it unless the user (or root) owns it and
        # nobody else may write to it (safepath.check_runtime_dir)
        return f"/tmp/virlogd-{os.geteuid() if uid is None else uid}"
    return os.path.join(base, "virlogd")


def socket_path(env: Env = None, uid: Uid = None) -> str:
    return os.path.join(runtime_dir(env, uid), "virlogd-sock")


SYSTEM_SOCKET = "/run/virlogd/virlogd-sock"


def client_socket_candidates(env: Env = None, uid: Uid = None) -> List[str]:
    """The sockets a client (``virlog``, ``x:virlogd``, ``VirlogdHandler``) looks at when it
    is given none, in order: the user's own daemon's socket, then the system daemon's, which
    is 0666 like ``/dev/log`` (root's own socket is the system one: a single entry). A
    client uses the first that exists, else the last: a user who runs a daemon of their own
    never has records go to the system's because theirs is restarting."""
    own = socket_path(env, uid)
    return [own] if own == SYSTEM_SOCKET else [own, SYSTEM_SOCKET]


def admin_socket_path(env: Env = None, uid: Uid = None) -> str:
    return os.path.join(runtime_dir(env, uid), "virlogd-admin-sock")


def ring_path(socket: str) -> str:
    """The persistent ring lives beside the client socket and is named after it: one per
    daemon instance, even when two share a directory."""
    return f"{socket}.ring"


def config_path(env: Env = None, uid: Uid = None) -> str:
    if _is_root(uid):
        return "/etc/virlogd.conf"
    return os.path.join(_xdg(_env(env), "XDG_CONFIG_HOME", ".config"), "virlogd",
                        "virlogd.conf")


def log_file(env: Env = None, uid: Uid = None) -> str:
    if _is_root(uid):
        return "/var/log/virlogd/virlogd.log"
    return os.path.join(_xdg(_env(env), "XDG_CACHE_HOME", ".cache"), "virlogd", "virlogd.log")


def journal_writable(path: str = JOURNAL_SOCKET) -> bool:
    """A journald socket we may write to *and* that someone listens on: a dead journald
    leaves its socket file behind, and choosing it would lose every record."""
    try:
        if not (stat.S_ISSOCK(os.stat(path).st_mode) and os.access(path, os.W_OK)):
            return False
    except OSError:
        return False
    return listening(path, socket.SOCK_DGRAM)


def stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and os.isatty(sys.stdin.fileno())
    except (OSError, ValueError):
        return False


def default_output(level: int, detached: bool, *, journal: Optional[bool] = None,
                   tty: Optional[bool] = None, env: Env = None, uid: Uid = None) -> OutputSpec:
    """journald if its socket is writable and we are detached or stdin is not a tty; else
    the default file when detached; else stderr. Level = the default priority, except that
    journald gets 2 for a default of 1 (journald rate-limits floods of debug)."""
    journal = journal_writable() if journal is None else journal
    tty = stdin_is_tty() if tty is None else tty
    if journal and (detached or not tty):
        return OutputSpec(max(level, 2), "journald")
    if detached:
        return OutputSpec(level, "file", log_file(env, uid))
    return OutputSpec(level, "stderr")


def log_dir_mode(uid: Uid = None) -> int:
    """The mode of the default file's directories we create: 0755 for root (like /var/log),
    0700 for a user (the XDG base directory spec's mode for ~/.cache)."""
    return 0o755 if _is_root(uid) else 0o700


def make_log_dir(path: str, uid: Uid = None) -> None:
    """Create the missing directories above the default log file *path*, each with
    ``log_dir_mode`` exactly (whatever the umask); raises OSError. Nothing else makes them
    outside systemd (whose ``LogsDirectory=`` does it for the unit)."""
    mode = log_dir_mode(uid)
    missing: List[str] = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue                    # made meanwhile (or not a directory: open says so)
        os.chmod(directory, mode)


def ensure_parent(path: str, mode: int = 0o700) -> None:
    """Create the directory holding *path* (like libvirt, with a private mode)."""
    os.makedirs(os.path.dirname(path) or ".", mode=mode, exist_ok=True)
