"""The in-process library: ``getLogger``, ``configure``, ``dump_buffer``.

The first call that needs settings reads ``LIBVIRT_DEBUG``, ``LIBVIRT_LOG_FILTERS`` and
``LIBVIRT_LOG_OUTPUTS`` exactly as the daemon does (bad values warned about on stderr, the
entries before a bad token applied). ``configure()`` is the programmatic way and is strict:
a bad string raises ``ConfigError`` and changes nothing.

Cost matters most for calls nobody wants, so each ``Logger`` caches the lowest priority that
does anything (the filter threshold for its source, or 1 while the ring buffer keeps debug
history); ``configure()`` refreshes every logger, so the cache can never go stale. A call
below the threshold that the ring keeps (debug history) is packed straight into the ring,
without a ``Record``: it is the most frequent call and the least often read.

The daemon's wishes (protocol version 3): an ``x:virlogd`` output's client learns what the
daemon wants from each source (its filters and level). Where the daemon wants more than the
library's own settings send it (``virlogd-admin daemon-log-filters "1:qemu"``), the loggers
of those sources are refreshed, within a moment and without a restart, so that the output
also gets those records (``_Wished``); the library's other outputs still get exactly what
its own settings give them. The library never sends the daemon *less* than its settings
say: what a program sends today stays in the daemon's ring. Loggers of every other source
keep their plain attributes, so a call costs what it cost before.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ..core import defaults, fieldnames
from ..core.errors import ConfigError
from ..core.filters import FilterSet
from ..outputs import OutputContext, build
from ..outputs.file import FileOutput
from ..core.priority import parse_priority
from ..core.record import Record
from ..core.ring import RingBuffer
from ..core.router import Router, RouterState
from ..core.specs import OutputSpec, parse_filters, parse_outputs
from ..core import textformat

DEFAULT_BUFFER_KB = 64

_lock = threading.RLock()
_router: Optional[Router] = None
_loggers: Dict[str, "Logger"] = {}
_pid = [os.getpid()]           # os.getpid() costs a system call per record; forks refresh it
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
_getframe = sys._getframe
_time = time.time
_current = {"level": 3, "filters": [], "outputs": [], "buffer_size": DEFAULT_BUFFER_KB}
_pack_record = textformat.pack_record
# a call below the filters that the ring keeps is packed as the router would pack it, from
# its parts: no Record is built for a call that may never be read
_pack_parts = textformat.pack_parts


def _fallback_output():
    path = defaults.log_file()
    defaults.ensure_parent(path)
    return FileOutput(OutputSpec(1, "file", path), OutputContext())


def _build_router(level: int, filters, outputs, buffer_size: int,
                  old: Optional[Router]) -> Router:
    specs = outputs or [defaults.default_output(level, detached=False)]
    ctx = OutputContext()
    built = []
    try:
        for spec in specs:
            built.append(build(spec, ctx))
    except BaseException:
        for out in built:
            out.close()
        raise
    state = RouterState(FilterSet(filters, level), built)
    for out in built:               # x:virlogd: follow what the daemon wants
        client = getattr(out, "client", None)
        if client is not None and hasattr(client, "on_wish"):
            client.on_wish.append(_wishes_changed)
            client.open()           # hear the daemon before the first record it wants
    if old is not None and old.ring is not None and old.ring.capacity == buffer_size * 1024:
        ring = old.ring          # same size: keep the history (resizing discards it)
    else:
        ring = RingBuffer(buffer_size * 1024) if buffer_size > 0 else None
    return Router(state, ring, flush_each=True, dump_fallback=_fallback_output)


def _from_environment() -> Router:
    from ..core.settings import load
    settings = load(read_config_file=False, env=os.environ)
    for problem in settings.problems:
        print(f"virlogd: warning: {problem}", file=sys.stderr)
    _current.update(level=settings.log_level, filters=list(settings.filters),
                    outputs=list(settings.outputs))
    good = []
    ctx = OutputContext()
    for spec in settings.outputs:       # an output that cannot be opened is skipped, loudly
        try:
            build(spec, ctx).close()
            good.append(spec)
        except (OSError, ValueError) as err:
            print(f"virlogd: warning: LIBVIRT_LOG_OUTPUTS: cannot open output '{spec}': "
                  f"{err}; ignored", file=sys.stderr)
    _current["outputs"] = good
    return _build_router(settings.log_level, settings.filters, good,
                         DEFAULT_BUFFER_KB, None)


def _get_router() -> Router:
    global _router
    router = _router
    if router is None:
        with _lock:
            if _router is None:
                _router = _from_environment()
                atexit.register(_at_exit)
            router = _router
    return router


def _at_exit() -> None:
    router = _router
    if router is not None:
        router.close()


def configure(level: Union[int, str, None] = None, filters: Optional[str] = None,
              outputs: Optional[str] = None, buffer_size: Optional[int] = None) -> None:
    """Set the library's logging; arguments left as None keep their current value.

    All-or-nothing: a bad value raises ``ConfigError`` naming it and nothing changes.
    """
    global _router
    with _lock:
        old = _get_router()
        new_level = _current["level"] if level is None else _check_level(level)
        new_filters = _current["filters"] if filters is None else _strict(parse_filters(filters),
                                                                          "filters")
        new_outputs = _current["outputs"] if outputs is None else _strict(parse_outputs(outputs),
                                                                          "outputs")
        new_size = _current["buffer_size"] if buffer_size is None else _check_size(buffer_size)
        try:
            router = _build_router(new_level, new_filters, new_outputs, new_size, old)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot open outputs {outputs!r}: {err}") from None
        old.close()
        _router = router
        _current.update(level=new_level, filters=new_filters, outputs=new_outputs,
                        buffer_size=new_size)
        for logger in _loggers.values():
            logger._refresh(router)


def _wishes_changed(_wish) -> None:
    """An x:virlogd output's daemon told a new wish (its client's thread): refresh every
    logger, so that its calls reach what the daemon wants from now on."""
    with _lock:
        router = _router
        if router is None:
            return
        for logger in _loggers.values():
            logger._refresh(router)


def _extra_for(router: Router, source: str, threshold: int):
    """The x:virlogd outputs whose daemon wants more of *source* than the router gives them
    (it routes a priority at or above both *threshold* and the output's own level), each
    with the lowest priority its daemon wants; [] when the daemon wants nothing more."""
    extra = []
    for out in router.state.outputs:
        client = getattr(out, "client", None)
        wish = getattr(client, "wish", None)
        if wish is not None:
            want = wish.threshold(source)
            if want < max(threshold, out.priority):
                extra.append((out, want))
    return extra


class _Wished:
    """A logger's router while a daemon wants more of its source than the library's
    settings route: records at or above the settings' threshold are routed as always;
    below it they go to the ring (as always) and, like records an output's own level
    refuses, to the x:virlogd outputs whose daemon wants them."""

    __slots__ = ("router", "threshold", "extra", "ring")

    def __init__(self, router: Router, threshold: int, extra) -> None:
        self.router = router
        self.threshold = threshold
        self.extra = tuple(extra)
        self.ring = router.ring

    def route_many(self, records) -> None:
        router = self.router
        threshold = self.threshold
        for record in records:
            priority = record.priority
            if priority >= threshold:
                router.route_many((record,))
            elif self.ring is not None:
                router.keep(_pack_record(record))
            for out, want in self.extra:
                if want <= priority < max(threshold, out.priority):
                    try:
                        out.handle(record, "")
                    except Exception as err:  # noqa: BLE001 - as the router: never raised
                        out.failed += 1
                        out.last_error = str(err)
                    else:
                        out.written += 1      # the router's counters, as the router keeps them


def _strict(parsed, what: str):
    specs, error = parsed
    if error is not None:
        raise ConfigError(f"invalid {what} \"{error.text}\": {error.message}")
    return specs


def _check_level(level: Union[int, str]) -> int:
    if isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= 4:
        return level
    try:
        return parse_priority(str(level)) if isinstance(level, str) else _bad_level(level)
    except ValueError as err:
        raise ConfigError(f"invalid level: {err}") from None


def _bad_level(level) -> int:
    raise ValueError(f"invalid priority {level!r} (expected 1-4 or debug, info, warning, "
                     f"error)")


def _check_size(size: int) -> int:
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    raise ConfigError(f"invalid buffer_size {size!r}: expected a number of kB, 0 or more")


def dump_buffer(reason: str = "Dump requested") -> int:
    """Write the ring buffer between libvirt's banners to the text outputs; return how many
    records it held."""
    return _get_router().dump(reason)


def getLogger(name: str) -> "Logger":   # noqa: N802 - the stdlib's spelling, on purpose
    logger = _loggers.get(name)
    if logger is None:
        with _lock:
            logger = _loggers.setdefault(name, Logger(name))
    return logger


def _logs_at(priority: int, name: str) -> Callable[..., None]:
    """``Logger.<name>``: log at *priority*. Cost matters most for the calls nobody wants,
    then for those only the ring keeps, so the method takes them itself: a call below every
    threshold is one comparison; a call only the ring wants is packed into it from the call
    site, with no Record; the usual call (no fields, no stack) builds its Record here; the
    rest goes to ``_log``."""
    def method(self: "Logger", msg: object, *args: object, **meta: Any) -> None:
        if self._min > priority:
            if meta:
                _fields(meta)      # a bad field name is an error whether or not it is logged
            return
        frame = _getframe(1)
        if not meta:
            message = msg % args if args else str(msg)    # type: ignore[operator]
            if self._threshold > priority:                  # only the ring wants it
                self._keep(_pack_parts(_time(), _pid[0], frame.f_lineno, priority,
                                       frame.f_code.co_name, message))
                return
            if not self._stack:                               # the usual call
                code = frame.f_code
                self._router.route_many((Record(priority, self.name, message,
                                                func=code.co_name, line=frame.f_lineno,
                                                file=code.co_filename, pid=_pid[0]),))
                return
        self._log(priority, msg, args, meta, frame)
    method.__name__ = name
    method.__qualname__ = f"Logger.{name}"
    method.__doc__ = f"Log *msg* (``msg % args`` when args are given) at priority {priority}."
    return method


class Logger:
    """Logs records from one source; ``name`` is what filters match.

    ``debug``, ``info``, ``warning`` and ``error`` are one implementation (``_logs_at``) with
    the priority built in; ``log`` takes it as an argument."""

    __slots__ = ("name", "_min", "_router", "_stack", "_threshold", "_keep")

    def __init__(self, name: str) -> None:
        self.name = name
        self._refresh(_get_router())

    debug = _logs_at(1, "debug")
    info = _logs_at(2, "info")
    warning = _logs_at(3, "warning")
    error = _logs_at(4, "error")

    def _refresh(self, router: Router) -> None:
        threshold, self._stack = router.decide(self.name)
        ring = router.ring
        extra = _extra_for(router, self.name, threshold)
        if extra:          # a daemon wants more of this source: through _Wished, first
            self._router: Union[Router, _Wished] = _Wished(router, threshold, extra)
            threshold = min(threshold, min(want for _out, want in extra))
        else:
            self._router = router
        self._min = 1 if ring is not None else threshold
        self._threshold = threshold
        # a ring whose append is atomic (compiled: one call under the GIL) needs neither the
        # router's lock nor a Python frame for a call only the ring wants
        self._keep = ring.append if ring is not None and getattr(ring, "atomic_append", False) \
            else router.keep

    def log(self, priority: int, msg: object, *args: object, **meta: Any) -> None:
        if not isinstance(priority, int) or not 1 <= priority <= 4:
            raise ValueError(f"invalid priority {priority!r} (expected 1-4)")
        if self._min <= priority:
            self._log(priority, msg, args, meta, _getframe(1))
        elif meta:
            _fields(meta)

    def _log(self, priority: int, msg: object, args: tuple, meta: Mapping[str, Any],
             frame: FrameType) -> None:
        """A call with fields, an exception or a stack to take (or from ``log``): the
        record in full, routed."""
        if meta or self._stack:
            fields, stack = _fields(meta) if meta else None, self._stacks(frame, meta)
        else:
            fields = stack = None
        code = frame.f_code
        self._router.route_many((Record(priority, self.name, _message(msg, args),
                                        func=code.co_name, line=frame.f_lineno,
                                        file=code.co_filename, fields=fields, stack=stack,
                                        pid=_pid[0]),))

    def _stacks(self, frame: FrameType, meta: Mapping[str, Any]) -> Optional[str]:
        """The call's stack (a ``+`` filter) and the exception asked for with exc_info."""
        stack = "".join(traceback.format_stack(frame)) if self._stack else None
        exc_info = meta.get("exc_info") if meta else None
        if exc_info:
            exc = sys.exc_info() if exc_info is True else exc_info
            if isinstance(exc, BaseException):
                exc = (type(exc), exc, exc.__traceback__)
            if exc and exc[0] is not None:
                stack = (stack or "") + "".join(traceback.format_exception(*exc))
        return stack


def _message(msg: object, args: tuple) -> str:
    return msg % args if args else str(msg)   # type: ignore[operator]


_META = {"message_id": "MESSAGE_ID", "domain": "LIBVIRT_DOMAIN", "code": "LIBVIRT_CODE"}


def _fields(meta: Mapping) -> dict:
    fields = {}
    for key, value in meta.items():
        if key in _META:
            if value is not None:
                fields[_META[key]] = _value(value)
        elif key == "fields":
            for name, val in (value or {}).items():
                fields[fieldnames.check(name)] = _value(val)
        elif key != "exc_info":
            raise TypeError(f"unexpected keyword argument '{key}' (use message_id, domain, "
                            f"code, fields or exc_info)")
    return fields


def _value(value):
    return value if isinstance(value, (str, bytes)) else str(value)
