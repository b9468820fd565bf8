"""Journal field names: which a client may attach, and how an invalid one is renamed.

journald silently drops a field whose name is not upper-case ASCII letters, digits and ``_``,
starts with ``_`` or a digit, or is longer than 64 bytes. virlogd must never lose data that
way: the library and ``virlog`` refuse such names up front (``check()``), and a record that
arrives over the wire keeps its data under a valid name (``sanitize()``), the rename counted.
Names virlogd itself sets (``MESSAGE``, ``PRIORITY``...) are reserved for the same reason:
a client's copy would be dropped or would forge ours.
"""
from __future__ import annotations

import re

# \Z, not $: "$" also matches before a final newline, and "ABC\n" is no journal name
_VALID = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")
RESERVED = frozenset({
    "MESSAGE", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID",
    "LIBVIRT_SOURCE", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "OBJECT_PID",
})


def is_valid(name: str) -> bool:
    return bool(_VALID.match(name)) and name not in RESERVED


def check(name: str) -> str:
    """Return *name* if a client may attach it, else raise ValueError saying why."""
    if name in RESERVED:
        raise ValueError(f"field name '{name}' is reserved: virlogd sets it itself")
    if not _VALID.match(name):
        raise ValueError(f"invalid field name '{name}': use 1-64 upper-case letters, digits "
                         f"and '_', starting with a letter")
    return name


def sanitize(name: str) -> str:
    """A valid name that keeps *name* recognisable: ``message-id`` -> ``MESSAGE_ID``,
    ``_PID`` -> ``X_PID``, ``MESSAGE`` -> ``X_MESSAGE``."""
    clean = re.sub(r"[^A-Z0-9_]", "_", name.upper()) or "X"
    if not clean[0].isalpha() or clean in RESERVED:
        clean = "X_" + clean.lstrip("_") if clean.lstrip("_") else "X"
    return clean[:64]
