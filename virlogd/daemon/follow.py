"""Live follow: ``virlogd-admin follow`` streams what the daemon receives, as it arrives.

A follower is an admin connection that asked to ``follow``: from then on the daemon writes
to it one JSON object per line, per record that matches the follower's filters (every record
at any level by default: before the daemon's own filters, so records no output keeps are
seen too), and ``{"missed": N}`` when N matching records did not fit its queue.

Why it can never slow the daemon or its clients:

- The router hands every batch to ``tap`` only while someone follows (``Router.tap`` is
  None otherwise: one attribute check per batch).
- Each follower has a queue bounded in bytes (``QUEUE_BYTES``). A record that does not fit
  is counted, not queued; once the queue is full a record costs a filter lookup and a count
  (with no filters, one addition per batch), and is never even encoded.
- The queues are written after each round of the loop's callbacks, with non-blocking sends;
  a socket that is full is watched for writability and the rest waits in its queue.
- When a follower has missed records, the next thing it receives is how many.

Followers go over the admin socket, so the admin socket's uid check applies to them.
"""
from __future__ import annotations

import base64
import collections
import json
import socket
from typing import Deque, List, Optional, Sequence

from ..core.filters import FilterSet
from ..core.record import Record

QUEUE_BYTES = 1024 * 1024          # per follower: ~5,000 typical records
NEVER = 5                          # a threshold no priority (1-4) reaches


def record_json(record: Record) -> dict:
    """Every field of *record* as JSON values: binary field values as ``{"base64": ...}``."""
    fields = {}
    for name, value in (record.fields or {}).items():
        fields[str(name)] = value if not isinstance(value, (bytes, bytearray)) else \
            {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    return {"time": record.time, "priority": record.priority, "source": record.source,
            "message": record.message, "func": record.func, "line": record.line,
            "file": record.file, "fields": fields, "stack": record.stack, "pid": record.pid,
            "uid": record.uid, "gid": record.gid, "ident": record.ident,
            "relayed": record.relayed}


def record_from_json(obj: dict) -> Record:
    """The Record a ``record_json`` object came from (for the text line)."""
    fields = {name: base64.b64decode(value["base64"]) if isinstance(value, dict) else value
              for name, value in (obj.get("fields") or {}).items()}
    return Record(obj["priority"], obj.get("source") or "", obj.get("message") or "",
                  time=obj.get("time"), func=obj.get("func"), line=obj.get("line") or 0,
                  file=obj.get("file"), fields=fields, stack=obj.get("stack"),
                  pid=obj.get("pid") or 0, uid=obj.get("uid"), gid=obj.get("gid"),
                  ident=obj.get("ident"), relayed=bool(obj.get("relayed")))


def encode(record: Record) -> bytes:
    # ASCII JSON: a message that is not valid UTF-8 (kept with surrogates) stays readable
    return (json.dumps(record_json(record), separators=(",", ":"), default=str) +
            "\n").encode("ascii")


class Follower:
    __slots__ = ("sock", "filters", "queue", "queued", "missed", "missed_total", "watching",
                 "who")

    def __init__(self, sock: socket.socket, filters: Optional[FilterSet], who: str) -> None:
        self.sock = sock
        self.filters = filters          # None: everything
        self.queue: Deque[memoryview] = collections.deque()
        self.queued = 0                 # bytes in the queue
        self.missed = 0                 # not told yet
        self.missed_total = 0
        self.watching = False           # waiting for the socket to be writable
        self.who = who


class FollowHub:
    """The followers of one daemon; installs itself as *router*'s tap while there are any."""

    def __init__(self, loop, router, *, queue_bytes: int = QUEUE_BYTES) -> None:
        self.loop = loop
        self.router = router
        self.queue_bytes = queue_bytes
        self.followers: List[Follower] = []
        self.missed_total = 0           # of followers gone too
        self.encode_errors = 0

    # -- joining and leaving -----------------------------------------------------------
    def add(self, sock: socket.socket, filters: Optional[FilterSet], who: str) -> Follower:
        """Follow on *sock* (connected, non-blocking, told ``ok`` already)."""
        follower = Follower(sock, filters, who)
        self.followers.append(follower)
        self.loop.add_reader(sock, self._event)
        if len(self.followers) == 1:
            self.router.tap = self.offer
            self.loop.after_batch.append(self._write_all)
        return follower

    def remove(self, follower: Follower) -> None:
        if follower not in self.followers:
            return
        self.followers.remove(follower)
        self.missed_total += follower.missed_total
        self.loop.remove_reader(follower.sock)
        try:
            follower.sock.close()
        except OSError:
            pass
        if not self.followers:
            self.router.tap = None
            try:
                self.loop.after_batch.remove(self._write_all)
            except ValueError:
                pass

    def close(self) -> None:
        for follower in list(self.followers):
            self.remove(follower)

    # -- the tap (inside the router's lock: append and count only) ----------------------
    def offer(self, records: Sequence[Record]) -> None:
        """Queue *records* for each follower they match; never raises, never blocks."""
        encoded = {}                    # index -> bytes, made once for all followers
        limit = self.queue_bytes
        for follower in self.followers:
            filters = follower.filters
            if filters is None and self._full(follower):
                follower.missed += len(records)         # full: nothing to look at
                follower.missed_total += len(records)
                continue
            for index, record in enumerate(records):
                try:
                    if filters is not None and \
                            record.priority < filters.decide(record.source)[0]:
                        continue
                    if self._full(follower):
                        follower.missed += 1
                        follower.missed_total += 1
                        continue
                    data = encoded.get(index)
                    if data is None:
                        data = encoded[index] = encode(record)
                except Exception:  # noqa: BLE001 - a record we cannot show is missed
                    self.encode_errors += 1
                    follower.missed += 1
                    follower.missed_total += 1
                    continue
                if len(data) > limit - follower.queued and follower.queued:
                    follower.missed += 1
                    follower.missed_total += 1
                    continue
                self._tell_missed(follower)
                follower.queue.append(memoryview(data))
                follower.queued += len(data)

    def _full(self, follower: Follower) -> bool:
        """No room for a record: the queue is full, or it overflowed and has not drained to
        half yet (so that a follower hears of its losses once per stall, not once per record
        that happened to fit)."""
        return follower.queued >= self.queue_bytes or \
            (follower.missed > 0 and follower.queued > self.queue_bytes // 2)

    def _tell_missed(self, follower: Follower) -> None:
        if follower.missed:
            notice = memoryview(f'{{"missed":{follower.missed}}}\n'.encode("ascii"))
            follower.missed = 0
            follower.queue.append(notice)
            follower.queued += len(notice)

    # -- writing -------------------------------------------------------------------------
    def _write_all(self) -> None:
        for follower in list(self.followers):
            if follower.queue and not follower.watching:
                self._write(follower)

    def _write(self, follower: Follower) -> None:
        queue = follower.queue
        while True:
            if follower.missed and not self._full(follower):   # it can hear what it missed
                self._tell_missed(follower)
            if not queue:
                break
            chunk = queue[0]
            try:
                sent = follower.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.remove(follower)
                return
            follower.queued -= sent
            if sent == len(chunk):
                queue.popleft()
            else:
                queue[0] = chunk[sent:]
                break
        waiting = bool(queue)
        if waiting != follower.watching:
            follower.watching = waiting
            self.loop.watch_writable(follower.sock, waiting)

    def _event(self, sock: socket.socket) -> None:
        """The follower's socket is readable (it left, or wrote: ignored) or writable."""
        follower = next((f for f in self.followers if f.sock is sock), None)
        if follower is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":
            self.remove(follower)
            return
        if follower.watching or follower.queue:
            self._write(follower)

    # -- introspection -------------------------------------------------------------------
    def stats(self) -> dict:
        return {"connected": len(self.followers),
                "missed": self.missed_total + sum(f.missed_total for f in self.followers),
                "queued_bytes": sum(f.queued for f in self.followers)}


def follow_filters(specs) -> Optional[FilterSet]:
    """A follower's FilterSet for *specs* (None: everything): a record matches when its
    source matches a filter and its priority reaches that filter's; other sources never."""
    return FilterSet(specs, NEVER) if specs else None
