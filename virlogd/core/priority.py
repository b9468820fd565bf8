"""Priorities: libvirt's four levels, their names, and the maps to syslog severities.

libvirt accepts exactly ``1``..``4`` and the lower-case names (``warn`` is *not* accepted,
although its docs once listed it), so ``parse_priority`` (settings, flags, admin) is strict and
case-sensitive. ``virlog`` also speaks ``logger``'s language (``parse_logger_priority``):
syslog's level names, any case, and ``facility.level``; the facility travels as the field
``FACILITY_FIELD`` and the syslog, remote and journald outputs use it (``facility_of``).
"""
from __future__ import annotations

from enum import IntEnum
from typing import Optional, Tuple

from .record import Record


class Priority(IntEnum):
    DEBUG = 1
    INFO = 2
    WARNING = 3
    ERROR = 4


NAMES = {1: "debug", 2: "info", 3: "warning", 4: "error"}
BY_NAME = {name: level for level, name in NAMES.items()}

# libvirt level -> syslog severity (LOG_DEBUG 7, LOG_INFO 6, LOG_WARNING 4, LOG_ERR 3);
# journald's PRIORITY field uses the same numbers.
SYSLOG_SEVERITY = {1: 7, 2: 6, 3: 4, 4: 3}

# syslog severity 0..7 -> libvirt level (emerg/alert/crit/err -> error, warning -> warning,
# notice/info -> info, debug -> debug), for the syslog-compatible input.
FROM_SYSLOG_SEVERITY = {0: 4, 1: 4, 2: 4, 3: 4, 4: 3, 5: 2, 6: 2, 7: 1}


# syslog(3)'s level names (with its deprecated panic, error, warn) -> libvirt level, by
# FROM_SYSLOG_SEVERITY: emerg/alert/crit/err -> error, warning -> warning, notice/info -> info,
# debug -> debug
SYSLOG_LEVELS = {"emerg": 0, "panic": 0, "alert": 1, "crit": 2, "err": 3, "error": 3,
                 "warning": 4, "warn": 4, "notice": 5, "info": 6, "debug": 7}
# facility names as logger(1) and syslog(3) know them -> facility number
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "security": 4,
              "syslog": 5, "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10,
              "ftp": 11, **{f"local{n}": 16 + n for n in range(8)}}
# The field that carries a record's syslog facility (a number, 0-23): the syslog input sets
# it from the datagram's PRI, virlog from ``-p facility.level``. Outputs that speak syslog's
# numbers use it in place of daemon (3).
FACILITY_FIELD = "SYSLOG_INPUT_FACILITY"
_LEVEL_LIST = "debug, info, notice, warning, warn, err, error, crit, alert, emerg, panic"
_FACILITY_LIST = ("kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, "
                  "ftp, local0-local7")
FACILITY_DAEMON = 3


def parse_logger_priority(text: str) -> Tuple[int, Optional[int]]:
    """``(level 1-4, facility number or None)`` for what ``logger -p`` takes: ``1``..``4``,
    a level name (syslog's or libvirt's, any case) or ``facility.level``.

    Raises ValueError naming the value and what was expected."""
    if text in ("1", "2", "3", "4"):
        return int(text), None
    facility_name, dot, level_name = text.lower().rpartition(".")
    facility = None
    if dot:
        facility = FACILITIES.get(facility_name)
        if facility is None:
            raise ValueError(f"invalid facility '{text[:len(facility_name)]}' in '{text}' "
                             f"(FACILITY: {_FACILITY_LIST})")
    severity = SYSLOG_LEVELS.get(level_name)
    if severity is None:
        if dot:
            raise ValueError(f"invalid level '{text[len(facility_name) + 1:]}' in '{text}' "
                             f"(LEVEL: {_LEVEL_LIST})")
        raise ValueError(f"invalid priority '{text}' (expected 1-4, LEVEL or FACILITY.LEVEL; "
                         f"LEVEL: {_LEVEL_LIST})")
    return FROM_SYSLOG_SEVERITY[severity], facility


def facility_of(record: Record) -> int:
    """The syslog facility an output writes for *record*: its ``FACILITY_FIELD`` when that is
    a number from 0 to 23, else daemon (3), libvirt's."""
    value = record.fields.get(FACILITY_FIELD) if record.fields else None
    if type(value) is str and 0 < len(value) <= 2 and value.isascii() and value.isdigit() \
            and int(value) <= 23:
        return int(value)
    return FACILITY_DAEMON


def parse_priority(text: str, *, names: bool = True) -> int:
    """Return the level 1-4 for ``"1"``..``"4"`` or, if *names*, ``debug``..``error``.

    Raises ValueError naming the value; callers add where it came from.
    """
    if text in ("1", "2", "3", "4"):
        return int(text)
    if names and text in BY_NAME:
        return BY_NAME[text]
    expected = "1-4 or debug, info, warning, error" if names else "1-4"
    raise ValueError(f"invalid priority '{text}' (expected {expected})")
