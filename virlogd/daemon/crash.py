"""What happens to the ring buffer when the daemon dies of a crash.

Two kinds of crash, two paths:

* **An uncaught exception in any thread** (``sys.excepthook`` / ``threading.excepthook``,
  and the event loop's own ``except`` in ``runner``): the interpreter is intact and the
  hook runs as ordinary Python, not in a signal handler, so it dumps the buffer through the
  router (every text output gets it at once), then exits 70.

* **A fatal signal** (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL): the handler is
  ``faulthandler``'s, written in C and async-signal-safe. It writes the Python traceback of
  every thread to stderr with ``write(2)``, then restores the default action and re-raises,
  so the process dies of the same signal (and leaves its core) at once. It takes no lock,
  allocates nothing and runs no router, ring or output code. The records are not lost: the
  daemon's ring lives in a file mapping whose header is crash-consistent (every append
  updates it so that a death at any instant leaves whole entries, ``ring.py``,
  ``tests/reliability/test_ring_kill.py``), and the kernel keeps a shared mapping's pages
  when the process dies. The next start (``Restart=on-failure`` under systemd: at once)
  recovers them and dumps them to the outputs, marked as recovered, exactly as after SIGKILL.

Why not dump from the signal handler, as this module used to (a ctypes callback running the
router)? A fatal signal arrives at an arbitrary instruction: in C code in the middle of
routing, with the router's lock held by this or another thread, or inside malloc. A dump
then waits forever on that lock (nothing restarts a hung daemon) or routes from a
half-updated state. libvirt's emergency dump avoided that by writing its ring's bytes with
``write(2)`` alone; doing the same here would need new C code (a Python-level handler
allocates, and a ctypes callback also needs writable-and-executable memory, which
``MemoryDenyWriteExecute=`` forbids). The crash-consistent file already holds the bytes,
so the one safe thing the handler must do is die promptly, and ``faulthandler`` says where.

The cost: the dump of a fatal signal appears when the daemon starts again, not before it
dies; and when the ring had to stay in memory (its filesystem was full, ``daemon.py``
warns), a fatal signal loses the buffer as SIGKILL does.
"""
from __future__ import annotations

import faulthandler
import sys
import threading
import traceback
from typing import Callable

EXIT_CRASH = 70                      # EX_SOFTWARE: an uncaught exception ended the daemon

_dumping = threading.Lock()


def install(dump: Callable[[str], None], die: Callable[[int], None]) -> None:
    """*dump(reason)* writes the buffer after an uncaught exception; *die(status)* ends the
    process then (the one place that exits is the caller's). Fatal signals get
    ``faulthandler`` (see the module's note): no dump from inside the handler."""
    try:
        faulthandler.enable(file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, OSError):
        # no usable stderr (closed, or not a real file): the fd of /dev/null then, so the
        # handler still re-raises at once
        faulthandler.enable(file=open("/dev/null", "w"), all_threads=True)  # noqa: SIM115

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
