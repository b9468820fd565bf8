"""The filter decision: which threshold applies to a source.

First match in list order wins (libvirt has no specificity rule). A plain match string is a
substring test; one containing ``*``, ``?`` or ``[`` is a glob over the whole source name
(libvirt 4.4+). Decisions are cached per source: the set is immutable, and a settings change
builds a new FilterSet, so the cache can never go stale.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Dict, Mapping, Sequence, Tuple

from .specs import FilterSpec


class FilterSet:
    __slots__ = ("filters", "default", "_cache", "cached")

    def __init__(self, filters: Sequence[FilterSpec] = (), default: int = 3) -> None:
        self.filters = tuple(filters)
        self.default = default
        self._cache: Dict[str, Tuple[int, bool]] = {}
        # the decisions made so far, read-only for callers: the router's per-record lookup
        # is one dict.get, and only a miss costs a call of decide()
        self.cached: Mapping[str, Tuple[int, bool]] = self._cache

    def decide(self, source: str) -> Tuple[int, bool]:
        """Return ``(threshold, stack)`` for *source*."""
        try:
            return self._cache[source]
        except KeyError:
            pass
        decision = (self.default, False)
        for spec in self.filters:
            if fnmatchcase(source, spec.match) if spec.is_glob else spec.match in source:
                decision = (spec.priority, spec.stack)
                break
        if len(self._cache) > 10000:   # sources are normally few; bound a hostile flood
            self._cache.clear()
        self._cache[source] = decision
        return decision
