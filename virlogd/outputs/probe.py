"""Can an output be opened? Asked without writing anything, before it is built.

One answer for the three places that need it, so they word it the same way: ``virlogd -t``
(exit 1 when there is a problem), the warning ``virlogd -d`` prints before it detaches (after
that its stderr is ``/dev/null``), and the daemon itself at start and on an admin change.

Two kinds of problem:

* ``REFUSED``: the output can never work as written (a file in a directory that does not
  exist, a directory, a file that refuses writes such as ``/proc/version``, a socket path too
  long for ``AF_UNIX``, an ``x:virlogd`` output naming the daemon's own socket). The daemon
  does not use it; an admin change that contains one is refused whole.
* ``UNREACHABLE``: its receiver is not there now (no ``/dev/log``, no journald). The output is
  kept (it reconnects by itself), and until it works its records go to the daemon's fallback.

The checks open nothing for writing that did not exist (a file output's file is created by
the output, not here); an existing file is opened and given a zero-length write, which costs
nothing on a real file and fails at once on one that takes no writes (``/proc/version``:
``EIO``).
"""
from __future__ import annotations

import os
import socket
import stat
from typing import List, NamedTuple, Optional, Sequence, Tuple

REFUSED = "refused"
UNREACHABLE = "unreachable"
SUN_PATH_MAX = 107          # bytes of a socket path, sockaddr_un's 108 less the final NUL


class Problem(NamedTuple):
    kind: str               # REFUSED or UNREACHABLE
    reason: str             # a sentence fragment: "the directory /x does not exist"


class OwnSocket(NamedTuple):
    """The daemon's client socket: its path, and once bound its (st_dev, st_ino)."""
    path: str
    ident: Optional[Tuple[int, int]] = None

    @classmethod
    def bound_at(cls, path: str) -> "OwnSocket":
        try:
            info = os.stat(path)
        except OSError:
            return cls(path)
        return cls(path, (info.st_dev, info.st_ino))

    def is_named_by(self, path: str) -> bool:
        """True if *path* reaches this socket: the same file (through a symlink, a hard link
        or a bind mount too), or, before it is bound (``-t``), the same path."""
        if os.path.realpath(path) == os.path.realpath(self.path):
            return True
        if self.ident is None:
            return False
        try:
            info = os.stat(path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.ident


def problem(spec, *, own_socket: Optional[OwnSocket] = None, remote_ca_file=None,
            create_dirs: bool = False,
            own_syslog: Optional[OwnSocket] = None) -> Optional[Problem]:
    """What stops output *spec* working, or None. *create_dirs*: the daemon will create the
    file's missing directories (the default output's), so only their creation is checked.
    *own_socket*, *own_syslog*: the daemon's client socket and syslog input, which its own
    outputs must not feed."""
    dest = spec.dest
    if dest == "file":
        reason = file_problem(spec.name, create_dirs=create_dirs)
        return Problem(REFUSED, reason) if reason else None
    if dest in ("syslog", "journald"):
        from ..core.defaults import JOURNAL_SOCKET
        from .syslog import DEV_LOG
        path = DEV_LOG if dest == "syslog" else JOURNAL_SOCKET
        if dest == "syslog" and own_syslog is not None and own_syslog.is_named_by(path):
            return Problem(REFUSED, f"{path} is this daemon's own syslog input: every record "
                                    f"would come back to it, forever")
        reason = receiver_problem(path, dest)
        return Problem(UNREACHABLE, reason) if reason else None
    if dest == "virlogd":
        reason = virlogd_problem(spec.name, own_socket)
        return Problem(REFUSED, reason) if reason else None
    if dest == "remote" and remote_ca_file and spec.name.startswith("tls://"):
        try:
            with open(remote_ca_file, "rb"):
                pass
        except OSError as err:      # the output's own words (RemoteOutput._ssl_context)
            return Problem(REFUSED, f"cannot load the CA file '{remote_ca_file}' "
                                    f"(remote_ca_file): {err.strerror or err}")
    return None


def file_problem(path: str, *, create_dirs: bool = False) -> Optional[str]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return _creatable(os.path.dirname(os.path.abspath(path)), create_dirs)
    except OSError as err:
        return err.strerror or str(err)
    if stat.S_ISDIR(info.st_mode):
        return "it is a directory"
    if stat.S_ISFIFO(info.st_mode):
        return None                     # opened read-write and non-blocking: never waits
    if stat.S_ISSOCK(info.st_mode):
        return "it is a socket, not a file"
    if not stat.S_ISREG(info.st_mode):
        return None         # a device: opening one can act (a tape rewinds, a watchdog arms)
    from ..core import safepath
    try:
        # as the output will open it (a symlink planted by another user is refused), and
        # never created or truncated here
        fd = safepath.open_output(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY
                                  | os.O_NONBLOCK)
    except OSError as err:
        return getattr(err, "strerror", None) or str(err)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None     # swapped meanwhile: the output's own open decides
        os.write(fd, b"")
    except OSError as err:
        return f"it does not accept writes ({err.strerror or err})"
    finally:
        os.close(fd)
    return None


def _creatable(directory: str, create_dirs: bool) -> Optional[str]:
    """Can a file be created in *directory* (after creating it, if *create_dirs*)?"""
    missing = []
    while True:
        try:
            info = os.stat(directory)
            break
        except FileNotFoundError:
            if not create_dirs:
                return f"the directory {directory} does not exist"
            missing.append(directory)
            parent = os.path.dirname(directory)
            if parent == directory:
                return f"the directory {directory} does not exist"
            directory = parent
        except OSError as err:
            return f"cannot use the directory {directory}: {err.strerror or err}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        what = f"create the directory {missing[-1]}" if missing else \
            f"create files in {directory}"
        try:
            read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        return f"cannot {what}: {'Read-only file system' if read_only else 'Permission denied'}"
    return None


def receiver_problem(path: str, what: str) -> Optional[str]:
    """Is a datagram receiver bound at *path*? (A connect sends nothing.)"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as err:
        return f"cannot reach {what} at {path}: {err.strerror or err}"
    finally:
        sock.close()
    return None


def virlogd_targets(name: str) -> List[str]:
    """The sockets an ``x:virlogd[:SOCKET]`` output may send to."""
    if name:
        return [os.path.abspath(name)]
    from ..core import defaults
    return list(defaults.client_socket_candidates())


def virlogd_problem(name: str, own_socket: Optional[OwnSocket]) -> Optional[str]:
    for path in virlogd_targets(name):
        size = len(os.fsencode(path))
        if size > SUN_PATH_MAX:
            return (f"the socket path {path} is too long for AF_UNIX ({size} bytes, at most "
                    f"{SUN_PATH_MAX})")
        if own_socket is not None and own_socket.is_named_by(path):
            return (f"{path} is this daemon's own socket: every record would come back to "
                    f"it, forever")
    return None


def problems(specs: Sequence, **kw) -> List[Tuple[object, Problem]]:
    """``(spec, problem)`` for every spec of *specs* that has one, in order."""
    found = []
    for spec in specs:
        issue = problem(spec, **kw)
        if issue is not None:
            found.append((spec, issue))
    return found


def describe(spec, issue: Problem) -> str:
    """The warning's sentence (``virlogd: warning:`` is added by whoever prints it)."""
    if issue.kind == REFUSED:
        return f"cannot open output '{spec}': {issue.reason}; ignored"
    return (f"output '{spec}' cannot deliver now: {issue.reason}; kept, and its records go to "
            f"the fallback output until it works")


def settings_warnings(settings, *, detached: bool) -> List[str]:
    """What ``-t`` reports about the outputs *settings* would open, and ``-d`` says before it
    detaches: the daemon's own warnings, word for word, checked without starting it."""
    from ..core import defaults
    from ..core.specs import OutputSpec
    specs = list(settings.outputs) or [defaults.default_output(settings.log_level, detached)]
    own = OwnSocket(os.path.abspath(settings.socket_path))
    syslog_input = getattr(settings, "syslog_socket_path", None)
    own_syslog = OwnSocket(os.path.abspath(syslog_input)) if syslog_input else None
    default_file = defaults.log_file()
    warnings, refused = [], 0
    for spec in specs:
        issue = problem(spec, own_socket=own, own_syslog=own_syslog,
                        remote_ca_file=getattr(settings, "remote_ca_file", None),
                        create_dirs=spec.dest == "file"
                        and os.path.abspath(spec.name) == default_file)
        if issue is not None:
            warnings.append(describe(spec, issue))
            refused += issue.kind == REFUSED
    if refused == len(specs):
        # the daemon's next choice: the default output, else stderr in the foreground
        chain = [defaults.default_output(settings.log_level, detached)]
        if not detached:
            chain.append(OutputSpec(settings.log_level, "stderr"))
        for spec in chain:
            if problem(spec, create_dirs=spec.dest == "file") is None:
                warnings.append(f"no output could be opened; records go to '{spec}' instead")
                break
        else:
            warnings.append("no output could be opened, nor the default output: records "
                            "will be counted as dropped")
    return warnings


def socket_warnings(settings) -> List[str]:
    """Socket paths the daemon could not bind (too long for ``AF_UNIX``)."""
    found = []
    for key in ("socket_path", "admin_socket_path", "syslog_socket_path"):
        path = getattr(settings, key, None)
        if path:
            size = len(os.fsencode(os.path.abspath(path)))
            if size > SUN_PATH_MAX:
                found.append(f"{key}: the socket path {path} is too long for AF_UNIX "
                             f"({size} bytes, at most {SUN_PATH_MAX})")
    return found
