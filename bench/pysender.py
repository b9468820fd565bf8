"""A Python client process for the two-process rows: ``pysender.py MODE SOCKET N MSGLEN``.

Modes (all through virlogd's own client code, as a program would use it):

* ``record``  — ``Client.send(Record(...))`` per record (the library's record path);
* ``frame``   — ``Client.send_frame(wire.encode_parts(...))`` per record (the batching client at
  its leanest: one encode, one append; writes go out 64 kB at a time);
* ``handler`` — stdlib ``logging`` with ``VirlogdHandler``: ``logger.info(msg)`` per record;
* ``syslog``  — stdlib ``logging.handlers.SysLogHandler(address=SOCKET)`` (to rsyslog).

Prints ``ready`` once set up and waits for a line on stdin (the harness's go), then ``start T`` before the first record and ``end T`` once everything was handed to the
socket, T on the monotonic clock (the same clock the harness reads).
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
import time


def body(seq: int, length: int) -> str:
    head = f"BENCHMSG {seq:09d} "
    return head + ("abcdefghijklmnopqrstuvwxyz" * 10)[:length - len(head)]


def ready() -> None:
    """Set up; wait for the harness's go (so several senders start together)."""
    print("ready", flush=True)
    sys.stdin.readline()


def main() -> int:
    mode, path, count, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    messages = [body(i, length) for i in range(count)]
    if mode in ("record", "frame"):
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        from virlogd.protocol.wire import encode_parts
        # goal 3 measures the batching client, the documented opt-out of one send per record
        client = Client(path, direct=(mode == "record"))
        ready()
        print(f"start {time.monotonic():.6f}", flush=True)
        if mode == "record":
            send = client.send
            for msg in messages:
                send(Record(2, "bench.io", msg))
        else:
            send_frame, now = client.send_frame, time.time
            for msg in messages:
                send_frame(encode_parts(2, "bench.io", msg, time=now()))
        client.close()
    else:
        logger = logging.getLogger("bench.io")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        if mode == "handler":
            from virlogd.client.handler import VirlogdHandler
            handler = VirlogdHandler(path)
        else:
            handler = logging.handlers.SysLogHandler(address=path)
        logger.addHandler(handler)
        ready()
        print(f"start {time.monotonic():.6f}", flush=True)
        info = logger.info
        for msg in messages:
            info(msg)
        handler.close()
    print(f"end {time.monotonic():.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
