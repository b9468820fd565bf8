"""The one place that touches signals.

Python runs a signal handler in the main thread between two bytecodes, and the event loop's
``select`` returns at once (PEP 475 retries it after the handler), so a handler only queues
work on the loop: nothing runs in a half-finished state. Fatal signals are different and
live in ``crash``: no Python handler can run after a real SIGSEGV.
"""
from __future__ import annotations

import signal
from typing import Callable


def install(loop, *, stop: Callable[[], None], dump: Callable[[], None],
            hangup: Callable[[], None]) -> None:
    def on_stop(signum, _frame) -> None:
        loop.call_soon_threadsafe(stop)

    def on_dump(_signum, _frame) -> None:
        loop.call_soon_threadsafe(dump)

    def on_hangup(_signum, _frame) -> None:
        loop.call_soon_threadsafe(hangup)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR2, on_dump)
    # SIGHUP reloads nothing (libvirt's logging settings are fixed at start); it is noted,
    # not obeyed, and must never kill the daemon the way its default action would.
    signal.signal(signal.SIGHUP, on_hangup)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def block_stop_signals() -> None:
    """Ignore SIGTERM/SIGINT while the daemon shuts down: a second Ctrl-C must not cut the
    drain short and lose records."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
