"""Left for the modules still being moved off the old C twins: there are none any more.

``core/speedups.py`` is the one place that chooses compiled or pure Python now; ``load``
returns None for every old twin name, so its callers run their pure-Python code.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

from . import speedups

PURE = speedups.PURE


def load(name: str) -> Optional[ModuleType]:
    """None: the old per-module C twins are gone."""
    return None


def built(name: str) -> bool:
    """Whether the one extension, ``virlogd._speedups``, was built."""
    return speedups.built()
