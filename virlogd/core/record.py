"""The record: the one value that travels from a client to the ring and the outputs."""
from __future__ import annotations

import os
import time as _time
from typing import Dict, Optional, Union

FieldValue = Union[str, bytes]


class Record:
    """One log record.

    ``fields`` holds the metadata a client attached (``MESSAGE_ID``, ``LIBVIRT_DOMAIN``...),
    names already valid journal field names, values ``str`` (or ``bytes`` when binary).
    ``pid``/``uid``/``gid`` are the *trusted* identity of the process that logged it: the
    library's own process, or the peer credentials the daemon read from the socket.
    ``ident`` is the program name the client gave (``SYSLOG_IDENTIFIER``), informational.
    ``relayed`` is True for a record another process sent (the client socket's decoder and
    the syslog input set it): text lines then name its source, since one file then mixes many
    programs' lines. The daemon's own records and the in-process library's keep libvirt's
    line.
    """

    __slots__ = ("time", "priority", "source", "message", "func", "line", "file",
                 "fields", "stack", "pid", "uid", "gid", "ident", "relayed")

    def __init__(self, priority: int, source: str, message: str, *,
                 time: Optional[float] = None, func: Optional[str] = None,
                 line: int = 0, file: Optional[str] = None,
                 fields: Optional[Dict[str, FieldValue]] = None,
                 stack: Optional[str] = None, pid: Optional[int] = None,
                 uid: Optional[int] = None, gid: Optional[int] = None,
                 ident: Optional[str] = None, relayed: bool = False) -> None:
        self.time = _time.time() if time is None else time
        self.priority = priority
        self.source = source
        self.message = message
        self.func = func
        self.line = line
        self.file = file
        self.fields = fields if fields is not None else {}
        self.stack = stack
        self.pid = os.getpid() if pid is None else pid
        self.uid = uid
        self.gid = gid
        self.ident = ident
        self.relayed = relayed

    def __repr__(self) -> str:
        return (f"Record(priority={self.priority!r}, source={self.source!r}, "
                f"message={self.message!r}, func={self.func!r}, line={self.line!r}, "
                f"pid={self.pid!r}, fields={self.fields!r})")
