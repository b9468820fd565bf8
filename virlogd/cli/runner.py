"""Run the daemon in the foreground or detached, with its pid file, and report how it ended.

Detaching (``-d``) uses python-daemon (double fork, setsid, chdir /, std streams to
/dev/null). python-daemon's own launcher exits 0 the moment it forks, before the daemon
knows whether it can start, so an error (socket in use, second instance) would be lost. We
fork once more ourselves and keep the command the user typed waiting on a pipe until the
detached daemon says "ready" or why it cannot start; its exit status tells the truth.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from ..core import defaults
from ..core.settings import Settings
from ..daemon import limits, pidfile
from ..daemon.daemon import Daemon, StartError, install_crash_handlers
from .exits import error, exit_now


def run(settings: Settings, *, detach: bool, pid_file: Optional[str]) -> int:
    if detach:
        pid_file = pid_file or os.path.join(os.path.dirname(settings.socket_path),
                                            "virlogd.pid")
    if pid_file:
        pid_file = os.path.abspath(pid_file)
        busy = pidfile.holder(pid_file)
        if busy is not None:
            error(f"another virlogd is running (pid {busy}, pid file {pid_file})")
            return 1
    if detach:
        return _launch_detached(settings, pid_file)
    return _serve(settings, pid_file, detached=False, ready_fd=None)


def _serve(settings: Settings, pid_file: Optional[str], *, detached: bool,
           ready_fd: Optional[int]) -> int:
    # systemd and shells give a soft 1,024 descriptors; the client cap is reckoned against
    # what this leaves (limits.py), so raise it before anything is opened
    limits.raise_nofile()
    daemon = Daemon(settings, detached=detached)
    install_crash_handlers(daemon, exit_now)
    try:
        daemon.start()
        if pid_file:
            pidfile.claim(pid_file)
    except (StartError, pidfile.PidFileBusy) as err:
        _report(ready_fd, str(err))
        daemon.shutdown()
        return 1
    if os.environ.get("VIRLOGD_TEST_HOOKS") == "1":
        from ..daemon import testhooks
        testhooks.install(daemon.router)
    _report(ready_fd, None)
    try:
        status = daemon.run()
    except Exception as err:  # noqa: BLE001 - the crash path: dump, then die loudly
        import traceback
        sys.stderr.write("virlogd: error: uncaught exception in the event loop:\n"
                         + traceback.format_exc())
        daemon.emergency_dump(f"Caught unexpected exception in the event loop "
                              f"({type(err).__name__}: {err})")
        exit_now(70)
        raise                                    # not reached
    daemon.shutdown()
    if pid_file:
        pidfile.release(pid_file)
    return status


def _report(ready_fd: Optional[int], problem: Optional[str]) -> None:
    if problem is not None and ready_fd is None:
        error(problem)
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, b"ok" if problem is None else problem.encode())
    finally:
        os.close(ready_fd)


def _launch_detached(settings: Settings, pid_file: str) -> int:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:                                    # the command the user typed
        os.close(write_end)
        chunks = []
        while True:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(child, 0)
        answer = b"".join(chunks).decode("utf-8", "replace")
        if answer == "ok":
            return 0
        error(answer or "the detached daemon died while starting")
        return 1
    os.close(read_end)
    import daemon as python_daemon               # python-daemon
    context = python_daemon.DaemonContext(files_preserve=[write_end], umask=0o022,
                                          detach_process=True, working_directory="/")
    try:
        context.open()                           # our child exits here; the grandchild goes on
    except Exception as err:  # noqa: BLE001
        os.write(write_end, f"cannot detach: {err}".encode())
        exit_now(1)
    status = _serve(settings, pid_file, detached=True, ready_fd=write_end)
    exit_now(status)
    return status                                # not reached
