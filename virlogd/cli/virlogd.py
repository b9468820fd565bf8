"""``virlogd``: flags in, settings merged, the daemon run (``runner.py``).

Exit statuses: 0 after a clean stop or a clean ``--check-config``; 1 when the start is
impossible (bad config file, socket in use, second instance) or ``--check-config`` found a
problem; 2 for a command-line usage error (argparse's convention); 70 after a crash.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .. import __version__
from ..core import defaults, settings as settings_mod
from ..core.priority import parse_priority
from .exits import PROG, error, exit_now, warn


def _level(text: str) -> int:
    try:
        return int(parse_priority(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _kb(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= settings_mod.MAX_BUFFER_KB:
        raise argparse.ArgumentTypeError(
            f"invalid size '{text}' (expected kB from 0 to {settings_mod.MAX_BUFFER_KB})")
    return value


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="libvirt's logging facility as a daemon: records from local "
        "clients, filtered and written to stderr, syslog, files and journald.",
        epilog="Settings: config file < LIBVIRT_DEBUG/LIBVIRT_LOG_FILTERS/LIBVIRT_LOG_OUTPUTS "
        "< flags. SIGUSR2 dumps the ring buffer; SIGHUP is ignored.")
    p.add_argument("-f", "--config", metavar="FILE", type=_nonempty,
                   help="config file (default: /etc/virlogd.conf for root, "
                        "$XDG_CONFIG_HOME/virlogd/virlogd.conf otherwise)")
    p.add_argument("-d", "--daemon", action="store_true", help="detach and run in the "
                   "background (writes the pid file)")
    p.add_argument("-p", "--pid-file", metavar="FILE", type=_nonempty,
                   help="pid file (default with -d: virlogd.pid in the runtime directory)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="a default level above 2 (info) becomes 2, as in libvirt")
    p.add_argument("--log-level", metavar="N", type=_level,
                   help="default priority: 1-4 or debug, info, warning, error")
    p.add_argument("--log-filters", metavar="STR", help='filters, e.g. "3:remote 1:+qemu"')
    p.add_argument("--log-outputs", metavar="STR", help='outputs, e.g. "1:file:/x.log 3:stderr"')
    p.add_argument("--log-buffer-size", metavar="KB", type=_kb,
                   help="ring buffer size in kB (0 disables; default 64)")
    p.add_argument("--socket", metavar="PATH", type=_nonempty, help="client socket")
    p.add_argument("--admin-socket", metavar="PATH", type=_nonempty, help="admin socket")
    p.add_argument("-t", "--check-config", action="store_true",
                   help="print every effective setting with its source, report every "
                        "problem, start nothing; exit 1 if anything is wrong")
    p.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    return p


FLAG_KEYS = {"log_level": "log_level", "log_filters": "log_filters",
             "log_outputs": "log_outputs", "log_buffer_size": "log_buffer_size",
             "socket": "socket_path", "admin_socket": "admin_socket_path"}


def load_settings(args: argparse.Namespace) -> settings_mod.Settings:
    flags = {key: getattr(args, attr) for attr, key in FLAG_KEYS.items()
             if getattr(args, attr) is not None}
    return settings_mod.load(config_file=args.config, explicit=args.config is not None,
                             flags=flags, verbose=args.verbose)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings(args)
    if settings.fatal:
        error(settings.fatal)
        return 1
    for problem in settings.problems:
        warn(problem)
    if args.check_config:
        default = None if settings.outputs else defaults.default_output(
            settings.log_level, detached=args.daemon)
        from ..daemon.limits import check_settings
        descriptors = check_settings(settings)      # the cap against RLIMIT_NOFILE
        if descriptors:
            warn(descriptors)
        from ..outputs import probe
        unusable = probe.socket_warnings(settings) + \
            probe.settings_warnings(settings, detached=args.daemon)
        for problem in unusable:                    # outputs that cannot be opened
            warn(problem)
        sys.stdout.write(settings_mod.render(settings, default))
        return 1 if settings.problems or descriptors or unusable else 0
    if args.daemon:
        # said now: once detached the daemon's stderr is /dev/null (it logs them too)
        from ..outputs import probe
        for problem in probe.settings_warnings(settings, detached=True):
            warn(problem)
    from .runner import run
    return run(settings, detach=args.daemon, pid_file=args.pid_file)


def main_entry() -> None:
    # The process shows as "virlogd ARGS..." (ps, pidof), not as the interpreter: proctitle.py
    from ..daemon.proctitle import set_process_name
    set_process_name(PROG, sys.argv[1:])
    try:
        status = main()
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
