"""Per-call costs inside one Python process: ``micro.py NAME N [SOCKET [WORKDIR]]``.

Each case runs in a fresh interpreter (the harness starts one per measurement), so one case's
configuration (the library's global router, logging's handlers) cannot leak into another.
Prints ``<µs per call> <process CPU seconds per call * 1e6>``: wall time of the loop
(including the flush that follows it, so no work is hidden in a buffer), and the CPU the
whole process used over the same span (the client's background thread included).
"""
from __future__ import annotations

import logging
import os
import sys
import time

FMT = "%(asctime)s %(levelname)s %(funcName)s:%(lineno)d %(message)s"


def body(seq: int, length: int = 120) -> str:
    head = f"BENCHMSG {seq:09d} "
    return head + ("abcdefghijklmnopqrstuvwxyz" * 10)[:length - len(head)]


def _stdlib_logger(handler: logging.Handler = None, level=logging.INFO) -> logging.Logger:
    logger = logging.getLogger("bench.io")
    logger.propagate = False
    logger.setLevel(level)
    if handler is not None:
        logger.addHandler(handler)
    return logger


def case(name: str, n: int, sock: str, workdir: str):
    """Return (callable run over n, finish callable)."""
    msg = body(0)
    if name == "stdlib_disabled":
        logger = _stdlib_logger()
        debug = logger.debug

        def loop():
            for _ in range(n):
                debug(msg)
        return loop, lambda: None
    if name == "stdlib_floor":     # what logging costs before any handler does work
        class Nothing(logging.Handler):
            def emit(self, record):
                pass
        info = _stdlib_logger(Nothing()).info

        def loop():
            for _ in range(n):
                info(msg)
        return loop, lambda: None
    if name == "stdlib_file":
        handler = logging.FileHandler(os.path.join(workdir, "stdlib.log"))
        handler.setFormatter(logging.Formatter(FMT))
        info = _stdlib_logger(handler).info

        def loop():
            for _ in range(n):
                info(msg)
        return loop, handler.flush
    if name == "handler":
        from virlogd.client.handler import VirlogdHandler
        handler = VirlogdHandler(sock)
        info = _stdlib_logger(handler).info
        handler.client.flush()            # connect before the clock starts

        def loop():
            for _ in range(n):
                info(msg)
        return loop, handler.flush
    if name.startswith("lib_"):
        import virlogd
        from virlogd.client import library
        if name == "lib_info":        # log.info to the daemon, default 64 kB ring
            library.configure(level=2, outputs=f"2:virlogd:{sock}", buffer_size=64)
        elif name == "lib_debug_ring":  # debug reaches the ring only
            library.configure(level=3, outputs=f"3:virlogd:{sock}", buffer_size=64)
        elif name == "lib_disabled":  # nothing wants it: filtered, no ring
            library.configure(level=3, outputs=f"3:virlogd:{sock}", buffer_size=0)
        log = virlogd.getLogger("bench.io")
        call = log.info if name == "lib_info" else log.debug
        log.warning("warm-up: connect before the clock starts")
        for out in library._get_router().state.outputs:
            out.flush()
            getattr(out, "client", None) and out.client.flush()

        def loop():
            for _ in range(n):
                call(msg)

        def finish():
            for out in library._get_router().state.outputs:
                client = getattr(out, "client", None)
                if client is not None:
                    client.flush()
        return loop, finish
    raise SystemExit(f"micro: unknown case {name!r}")


def main() -> int:
    name, n = sys.argv[1], int(sys.argv[2])
    sock = sys.argv[3] if len(sys.argv) > 3 else ""
    workdir = sys.argv[4] if len(sys.argv) > 4 else "/tmp"
    loop, finish = case(name, n, sock, workdir)
    c0, t0 = time.process_time(), time.perf_counter()
    loop()
    finish()
    t1, c1 = time.perf_counter(), time.process_time()
    print(f"{(t1 - t0) / n * 1e6:.4f} {(c1 - c0) / n * 1e6:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
