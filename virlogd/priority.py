"""Priorities: libvirt's four levels, their names, and the maps to syslog severities.

libvirt accepts exactly ``1``..``4`` and the lower-case names (``warn`` is *not* accepted,
although its docs once listed it), so the parser is strict and case-sensitive.
"""
from __future__ import annotations

from enum import IntEnum


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
