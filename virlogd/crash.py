"""Dump the ring buffer when the process dies of a crash, before it dies.

* An uncaught exception in any thread: ``sys.excepthook`` / ``threading.excepthook``.
* SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL: a Python handler installed with ``signal`` never
  runs for these (after a real fault the interpreter never gets back to its loop, and
  ``abort()`` re-raises at once), so the handler is a C function pointer made with ctypes and
  installed with libc's ``signal()``. It runs synchronously in the crashing thread, which
  already holds the GIL, dumps, restores the default action and re-raises, so the process
  still dies of the same signal (and leaves its core) exactly as libvirt's handler does.
  Running Python code there is a last resort that works unless the crash broke the
  interpreter itself; for that case, and for deaths no handler sees at all (SIGKILL, the OOM
  killer), the ring lives in a file mapping that the next start recovers.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import traceback
from typing import Callable, Dict

# libvirt's words for each signal (virLogEmergencyDumpAll)
REASONS: Dict[int, str] = {
    signal.SIGFPE: "Caught signal Floating-point exception",
    signal.SIGSEGV: "Caught Segmentation violation",
    signal.SIGILL: "Caught illegal instruction",
    signal.SIGABRT: "Caught abort signal",
    signal.SIGBUS: "Caught bus error",
}
EXIT_CRASH = 70                      # EX_SOFTWARE: an uncaught exception ended the daemon

_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int)
_keep = []                           # the C callbacks must outlive this module's functions
_dumping = threading.Lock()


def install(dump: Callable[[str], None], die: Callable[[int], None]) -> None:
    """*dump(reason)* writes the buffer; *die(status)* ends the process after a Python-level
    crash (the one place that exits is the caller's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)

    def on_fatal(signum: int) -> None:
        if _dumping.acquire(blocking=False):
            try:
                dump(REASONS.get(signum, "Caught unexpected signal"))
            except BaseException:  # noqa: BLE001 - nothing may stop the re-raise
                pass
        libc.signal(signum, None)     # SIG_DFL (0), then let the signal kill us
        os.kill(os.getpid(), signum)

    handler = _HANDLER_TYPE(on_fatal)
    _keep.append(handler)
    for signum in REASONS:
        libc.signal(signum, ctypes.cast(handler, ctypes.c_void_p))

    def on_exception(kind, value, tb, thread_name: str = "main") -> None:
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"virlogd: error: uncaught exception in thread {thread_name}:\n{text}")
        if _dumping.acquire(blocking=False):
            try:
                dump(f"Caught unexpected exception in thread {thread_name} "
                     f"({kind.__name__}: {value})")
            except BaseException:  # noqa: BLE001
                pass
        die(EXIT_CRASH)

    sys.excepthook = on_exception
    threading.excepthook = lambda args: on_exception(
        args.exc_type, args.exc_value, args.exc_traceback,
        args.thread.name if args.thread else "?")
