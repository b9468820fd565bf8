"""The one place that ends the process, and the daemon command's messages on stderr.

``exit_now`` is handed to the crash handlers (``daemon/daemon.py``) rather than imported by
them, so nothing under ``virlogd/daemon`` ends the process itself.
"""
from __future__ import annotations

import os
import sys

PROG = "virlogd"


def warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")


def error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")


def exit_now(status: int) -> None:
    """End the process at once (from a crash handler in any thread), streams flushed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(status)
