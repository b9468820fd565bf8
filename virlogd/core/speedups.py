"""Which implementation of the per-record data work runs: compiled, or pure Python.

``virlogd/_speedups.c`` (built by ``setup.py``, optional) compiles the few functions every
record goes through: decoding and encoding frames (``protocol/wire.py``), formatting and
packing a record (``core/textformat.py``) and the ring's circular area (``core/ring.py``).
Each of those modules defines the complete pure-Python function and passes it to ``pick``,
which returns the compiled function of the same name, or the pure one when the extension
was not built or ``VIRLOGD_PURE_PYTHON=1``. This module is the only one that imports the
extension.

A compiled function takes the common case itself and gives every other input, as it was
given, to its pure twin: so the pure function stays the reference, and each error message
is written once, in Python.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Dict, Optional, TypeVar

from . import fieldnames
from .priority import NAMES
from .record import Record

PURE = os.environ.get("VIRLOGD_PURE_PYTHON", "") == "1"
T = TypeVar("T")


def _load() -> Optional[ModuleType]:
    """The extension, bound to this Record; None when pure Python is asked for, when it was
    not built, or when it cannot build this Record (its slots changed)."""
    if PURE:
        return None
    try:
        module = importlib.import_module("virlogd._speedups")
    except ImportError:
        return None
    if not module.bind(record=Record, reserved=fieldnames.RESERVED, names=NAMES):
        return None
    return module


_speedups = _load()
# the pure twin of every function pick() returned, keyed by what it returned
_pure: Dict[Any, Any] = {}


def pick(pure: T) -> T:
    """The compiled function (or class) named as *pure*, which hands what it does not take
    to *pure*; *pure* itself without the extension."""
    chosen = pure
    if _speedups is not None:
        chosen = getattr(_speedups, pure.__name__)  # type: ignore[attr-defined]
        if not isinstance(pure, type):
            _speedups.fallback(pure)
    _pure[chosen] = _pure[pure] = pure
    return chosen


def pure(chosen: T) -> T:
    """The pure-Python twin of what ``pick`` returned (or was given): what the tests
    compare the compiled function with."""
    return _pure[chosen]  # type: ignore[no-any-return]


def compiled() -> bool:
    """Whether ``pick`` returns compiled functions in this process."""
    return _speedups is not None


def built() -> bool:
    """Whether the extension was built at all, whatever ``VIRLOGD_PURE_PYTHON`` says: what
    the tests check in CI, where running without it would hide it was never tested."""
    try:
        importlib.import_module("virlogd._speedups")
    except ImportError:
        return False
    return True
