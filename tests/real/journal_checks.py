"""libvirt's journald example (a failed QEMU probe), as data and one check, shared by the
library test here and the daemon-relay test: both must give the same entry.

    entry = real_journald.query(f"MESSAGE_ID={SEED_MESSAGE_ID}", f"_PID={pid}")[0]
    check_seed_entry(entry, code_file=..., code_line=..., code_func=...)
"""
from __future__ import annotations

from typing import Dict, Optional

SEED_SOURCE = "qemu.qemu_capabilities"
SEED_MESSAGE_ID = "8ae2f3fb-2dbe-498e-8fbd-012d40afa361"
SEED_BINARY = "/bin/qemu-system-xtensa"
SEED_MESSAGE = f"Failed to probe capabilities for {SEED_BINARY}"
SEED_FIELDS = {"LIBVIRT_QEMU_BINARY": SEED_BINARY}


def check_seed_entry(entry: Dict, *, code_file: Optional[str], code_line: Optional[int],
                     code_func: Optional[str]) -> None:
    """Assert the fields libvirt sets, exactly: PRIORITY "3" (libvirt error), facility
    daemon, the source, the code location, MESSAGE_ID with its dashes and the client's
    LIBVIRT_QEMU_BINARY. ``None`` for a code field means it must be absent."""
    expected = {
        "MESSAGE": SEED_MESSAGE,
        "PRIORITY": "3",
        "SYSLOG_FACILITY": "3",
        "LIBVIRT_SOURCE": SEED_SOURCE,
        "MESSAGE_ID": SEED_MESSAGE_ID,
        "LIBVIRT_QEMU_BINARY": SEED_BINARY,
        "CODE_FILE": code_file,
        "CODE_LINE": None if code_line is None else str(code_line),
        "CODE_FUNC": code_func,
    }
    assert {name: entry.get(name) for name in expected} == expected
