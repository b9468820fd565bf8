"""Crash triggers for the test suite, active only with ``VIRLOGD_TEST_HOOKS=1``.

A record from source ``virlogd.test.crash`` whose message names a way to die makes the daemon
die that way, from inside, as a real bug would: ``segv`` reads address 0 (a real SIGSEGV),
``abort`` calls abort(3), ``raise`` raises in the event loop, ``thread-raise`` raises in a
new thread, ``segv-locked`` is a SIGSEGV in another thread while the event loop holds the
router's lock (as a fault in C code in the middle of routing would be: a crash handler that
took that lock would wait forever). Without the variable this module is never imported.
"""
from __future__ import annotations

import ctypes
import os
import threading

SOURCE = "virlogd.test.crash"


class TestCrash(RuntimeError):
    pass


def _crash(how: str, router=None) -> None:
    if how == "segv-locked":
        with router._lock:
            fault = threading.Thread(target=ctypes.string_at, args=(0,), name="test-segv")
            fault.start()
            fault.join()
    elif how == "segv":
        ctypes.string_at(0)
    elif how == "abort":
        os.abort()
    elif how == "raise":
        raise TestCrash("test-triggered exception in the event loop")
    elif how == "thread-raise":
        def boom() -> None:
            raise TestCrash("test-triggered exception in a thread")
        threading.Thread(target=boom, name="test-crash").start()


def install(router) -> None:
    route_many = router.route_many

    def checked(records) -> None:
        route_many(records)
        for record in records:
            if record.source == SOURCE:
                router.flush()
                _crash(record.message, router)
    router.route_many = checked
