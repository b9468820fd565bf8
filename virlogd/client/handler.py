"""``VirlogdHandler``: stdlib ``logging`` records to the virlogd daemon.

The mapping: logger name -> source; DEBUG/INFO/WARNING/ERROR(+CRITICAL) -> 1/2/3/4
(anything below DEBUG is debug); funcName/lineno/pathname -> func/line/file;
``created`` -> time; ``exc_info`` (and ``stack_info``) -> the stack; ``extra`` keys written in
upper case (``extra={"MESSAGE_ID": ...}``) -> record fields. Lower-case extras are the
application's own attributes and are not sent. An upper-case key that is not a valid journal
field name is renamed with ``fieldnames.sanitize`` (``MESSAGE`` -> ``X_MESSAGE``), never lost.

The message is ``record.getMessage()``; with a formatter set on the handler, its output
(``logging.basicConfig``'s default format is not taken: see ``setFormatter``). The
program name (``ident``) is ``sys.argv[0]``'s base name. Sending never raises into the
program: an unreachable daemon is the Client's business (hold, count, report), and anything
else goes to ``handleError`` like every stdlib handler.

Following the daemon (``follow_daemon_levels=True``, the default): the daemon tells its
clients what it wants from each source (protocol version 3). stdlib ``logging`` drops a
record below its logger's level before any handler sees it, so while the daemon wants more
of a source than the logger's effective level lets through (``virlogd-admin
daemon-log-filters "1:qemu"``), the handler lowers the level of each logger it serves whose
name the daemon's filters match (as the daemon matches a source: ``filters.FilterSet``) to
the INFO or DEBUG the daemon wants, and puts back exactly what was there (``NOTSET``
included) once the daemon wants less again, the connection is lost or the handler is
closed. A level the program changed meanwhile is the program's and is left alone. The
handler never raises a level, nor lowers one for the daemon's usual warnings (a logger the
program set to ERROR stays so until someone asks the daemon for its info or debug). The
program's other handlers on those loggers see the extra records too, unless their own level keeps them out. Loggers
are changed under logging's module lock, from the client's listener thread.
"""
from __future__ import annotations

import logging
import sys
import threading
import traceback
from typing import Dict, Optional

from ..core import fieldnames
from ..protocol.wire import encode_parts as _encode_parts
from .client import Client, program_name

# every attribute a plain LogRecord has, so that what is left over came from extra=
_PLAIN = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
_PLAIN_SIZE = len(_PLAIN)
_STANDARD = frozenset(_PLAIN) | {"message", "asctime", "exc_text", "stack_info", "taskName"}


def priority_of(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return 4
    if levelno >= logging.WARNING:
        return 3
    if levelno >= logging.INFO:
        return 2
    return 1


_PRIORITY = {logging.DEBUG: 1, logging.INFO: 2, logging.WARNING: 3, logging.ERROR: 4,
             logging.CRITICAL: 4}


_LEVEL_OF = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


class VirlogdHandler(logging.Handler):
    """Sends every record it handles to the daemon at *socket_path* (None: the default).

    *follow_daemon_levels* (default True): while the daemon wants more of a source than the
    program's logger levels produce (``virlogd-admin daemon-log-filters "1:qemu"``), lower
    the levels of the loggers this handler serves that its filters match, and restore them
    exactly afterwards (see the module docstring). A program that manages its own levels
    passes False: then no logger level is ever touched."""

    def __init__(self, socket_path: Optional[str] = None, level: int = logging.NOTSET, *,
                 hold: int = 10000, direct: bool = True,
                 follow_daemon_levels: bool = True) -> None:
        super().__init__(level)
        # direct=False: batched only (see Client): cheaper, but os._exit can lose the last ms
        self.client = Client(socket_path, hold=hold, direct=direct)
        self.ident = program_name()
        self.follow_daemon_levels = follow_daemon_levels
        # logger name -> (the level it had, the level we set): what to put back
        self._lowered: Dict[str, tuple] = {}
        self._follow_lock = threading.Lock()
        if follow_daemon_levels:
            self.client.on_wish.append(self._follow)
            self.client.open()          # hear the daemon before the first record

    def handle(self, record: logging.LogRecord):
        """``Handler.handle`` without the handler's I/O lock: ``emit`` only hands one frame
        to the Client, which has its own lock, so this one would serialise the program's
        threads for nothing (and costs a fifth of the handler's time). Filters still run
        first, and a filter's replacement record (Python 3.12+) is the one sent."""
        rv = self.filter(record) if self.filters else True
        if rv:
            self.emit(rv if isinstance(rv, logging.LogRecord) else record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """One frame to the client: the record reaches the daemon's socket before this
        returns when the connection can take it (else the client queues it)."""
        try:
            message = record.getMessage() if self.formatter is None else self.format(record)
            levelno = record.levelno
            self.client.send_frame(_encode_parts(
                _PRIORITY.get(levelno) or priority_of(levelno), record.name,
                message, time=record.created, func=record.funcName, line=record.lineno or 0,
                file=record.pathname,
                # the usual record has no extras and no exception: decided without a call
                fields=_fields(record) if len(record.__dict__) > _PLAIN_SIZE else None,
                stack=_stack(record) if (record.exc_info or record.exc_text
                                         or record.stack_info) else None,
                ident=self.ident))
        except Exception:  # noqa: BLE001 - logging must never take its host down
            self.handleError(record)

    def setFormatter(self, fmt: Optional[logging.Formatter]) -> None:  # noqa: N802 - stdlib's
        """Set a formatter, except ``basicConfig``'s default one: ``basicConfig`` gives every
        handler with no formatter its ``levelname:name:message`` format, which would put
        ``ERROR:qemu.monitor:probe failed`` in journald and in files, where the priority and
        the source are fields already. A format the program chose (``basicConfig(format=...)``,
        or ``setFormatter`` called by the program itself) is kept. With no formatter the
        message is sent alone."""
        if fmt is not None and _is_basic_config_default(fmt, sys._getframe(1)):
            return
        super().setFormatter(fmt)

    @property
    def undelivered(self) -> int:
        """Records this handler could not deliver so far (see ``Client.undelivered``)."""
        return self.client.undelivered

    def flush(self) -> None:
        self.client.flush()

    def close(self) -> None:
        try:
            if self._follow in self.client.on_wish:
                self.client.on_wish.remove(self._follow)
            self._follow(None)              # the program's own levels again
            self.client.close()
        finally:
            super().close()

    # -- following the daemon's wishes -------------------------------------------------
    def _follow(self, wish) -> None:
        """The daemon's new wish (None: none to follow): put back every level we lowered,
        then lower the served loggers the daemon wants info or debug from, beyond what
        their own levels let through. Called on the client's thread, outside its locks."""
        with self._follow_lock, _module_lock():
            for name, (before, ours) in self._lowered.items():
                logger = _logger(name)
                if logger.level == ours:        # else the program set it since: its own
                    logger.setLevel(before)
            self._lowered = {}
            if wish is None:
                return
            manager = logging.Logger.manager
            # the root first: a logger that inherits a lowered level needs no change
            for logger in [logging.getLogger()] + [
                    item for item in list(manager.loggerDict.values())
                    if isinstance(item, logging.Logger)]:
                want = _LEVEL_OF[wish.threshold(logger.name)]
                if want < logging.WARNING and want < logger.getEffectiveLevel() \
                        and self._serves(logger):
                    self._lowered[logger.name] = (logger.level, want)
                    logger.setLevel(want)

    def _serves(self, logger: logging.Logger) -> bool:
        """True if a record of *logger* reaches this handler (propagation included)."""
        current: Optional[logging.Logger] = logger
        while current is not None:
            if self in current.handlers:
                return True
            if not current.propagate:
                return False
            current = current.parent
        return False


def _logger(name: str) -> logging.Logger:
    return logging.getLogger() if name == logging.getLogger().name else logging.getLogger(name)


def _module_lock():
    """logging's module lock (the one ``setLevel`` and ``getLogger`` take): held while we
    read and change levels, so no other thread changes them under us."""
    lock = getattr(logging, "_lock", None)
    return lock if lock is not None else threading.RLock()


def _is_basic_config_default(fmt: logging.Formatter, caller) -> bool:
    """True for the formatter ``logging.basicConfig`` makes when given no ``format``."""
    return (caller is not None and caller.f_code is logging.basicConfig.__code__
            and type(fmt) is logging.Formatter and fmt.datefmt is None
            and type(fmt._style) is logging.PercentStyle
            and fmt._fmt == logging.BASIC_FORMAT)


def _fields(record: logging.LogRecord) -> Optional[dict]:
    """The record's upper-case extras; emit() calls it only for a record with more
    attributes than a plain LogRecord (the usual one has none: no set is built)."""
    attrs = record.__dict__
    extra = attrs.keys() - _STANDARD
    if not extra:
        return None
    fields = {}
    for key in extra:
        if not key.isupper():
            continue
        value = attrs[key]
        if value is None:
            continue
        name = key if fieldnames.is_valid(key) else fieldnames.sanitize(key)
        fields[name] = value if isinstance(value, (str, bytes)) else str(value)
    return fields or None


def _stack(record: logging.LogRecord) -> Optional[str]:
    parts = []
    if record.exc_info and record.exc_info[0] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(part.rstrip("\n") for part in parts) + "\n" if parts else None
