"""Pure parsers for libvirt's filter and output grammar.

``"3:remote 4:event 1:+qemu"`` and ``"1:file:/var/log/x.log 3:syslog:libvirtd"``.

Each parser returns the specs it accepted *and* the first error, instead of raising: at
start-up libvirt applies the entries before a bad token, while a runtime change through
``virlogd-admin`` must be all-or-nothing. The caller picks the policy; the grammar lives
here once. Messages follow libvirt's wording and always quote the token (where libvirt's
"Invalid match string" names only the match, ours names the token too);
``SpecError.in_string()`` adds the whole string.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

DESTINATIONS = ("stderr", "syslog", "file", "journald", "virlogd", "remote")
_GLOB_CHARS = frozenset("*?[")
_REMOTE_URL = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


class SpecError(ValueError):
    """A bad token in a filter or output string; ``str()`` is libvirt's message."""

    def __init__(self, message: str, token: str, text: str) -> None:
        super().__init__(message)
        self.message = message
        self.token = token
        self.text = text

    def in_string(self) -> str:
        """The message, and the whole string too when it holds more than the bad token: what
        a refusal shows someone who typed the string (``virlogd-admin``)."""
        if self.text.strip(" ") == self.token:
            return self.message
        return f'{self.message} in "{self.text}"'


@dataclass(frozen=True)
class FilterSpec:
    priority: int
    match: str
    stack: bool = False

    @property
    def is_glob(self) -> bool:
        return not _GLOB_CHARS.isdisjoint(self.match)

    def __str__(self) -> str:
        return f"{self.priority}:{'+' if self.stack else ''}{self.match}"


@dataclass(frozen=True)
class OutputSpec:
    priority: int
    dest: str
    name: Optional[str] = None   # ident, absolute path, socket path or URL

    @property
    def key(self) -> Tuple[str, Optional[str]]:
        return (self.dest, self.name)

    def __str__(self) -> str:
        if self.name is None:
            return f"{self.priority}:{self.dest}"
        return f"{self.priority}:{self.dest}:{self.name}"


def _tokens(text: str) -> List[str]:
    # libvirt (>= 3.x) splits on the space character only; empty tokens are skipped.
    return [tok for tok in text.split(" ") if tok]


def _priority(raw: str, kind: str, token: str, text: str) -> int:
    if raw in ("1", "2", "3", "4"):
        return int(raw)
    raise SpecError(f"Invalid priority '{raw}' for {kind} '{token}'", token, text)


def parse_filter(token: str, text: Optional[str] = None) -> FilterSpec:
    text = token if text is None else text
    parts = token.split(":")
    if len(parts) != 2:
        raise SpecError(f"Malformed format for filter '{token}'", token, text)
    priority = _priority(parts[0], "filter", token, text)
    match, stack = parts[1], False
    if match.startswith("+"):
        match, stack = match[1:], True
    if not match:
        raise SpecError(f"Invalid match string '{parts[1]}' for filter '{token}'", token, text)
    return FilterSpec(priority, match, stack)


def parse_filters(text: str) -> Tuple[List[FilterSpec], Optional[SpecError]]:
    """Parse a filter string; return the filters before the first bad token, and its error."""
    specs: List[FilterSpec] = []
    for token in _tokens(text):
        try:
            specs.append(parse_filter(token, text))
        except SpecError as err:
            return specs, err
    return specs, None


def parse_output(token: str, text: Optional[str] = None,
                 cwd: Optional[str] = None) -> OutputSpec:
    text = token if text is None else text
    head, sep, rest = token.partition(":")
    if not sep:
        raise SpecError(f"Malformed format for output '{token}'", token, text)
    priority = _priority(head, "output", token, text)
    dest, sep, name = rest.partition(":")
    if dest not in DESTINATIONS:
        raise SpecError(f"Invalid destination '{dest}' for output '{token}'", token, text)
    unfit = SpecError(f"Output '{token}' does not meet the format requirements for "
                      f"destination type '{dest}'", token, text)
    if dest in ("stderr", "journald"):
        if sep:
            raise unfit
        return OutputSpec(priority, dest)
    if dest == "virlogd":
        if sep and not name:
            raise unfit
        return OutputSpec(priority, dest, os.path.abspath(os.path.join(cwd or os.getcwd(), name))
                          if name else None)
    if not name:
        raise unfit
    if dest == "file":
        name = os.path.abspath(os.path.join(cwd or os.getcwd(), name))
    elif dest == "remote" and not _valid_remote(name):
        raise SpecError(f"Invalid remote URL '{name}' for output '{token}' "
                        f"(expected tcp://HOST:PORT or tls://HOST:PORT)", token, text)
    return OutputSpec(priority, dest, name)


def _valid_remote(url: str) -> bool:
    found = _REMOTE_URL.match(url)
    return found is not None and 0 < int(found.group(3)) < 65536


def parse_outputs(text: str, cwd: Optional[str] = None
                  ) -> Tuple[List[OutputSpec], Optional[SpecError]]:
    """Parse an output string; a later duplicate (same destination and name) replaces the
    earlier one, as in libvirt. Returns the outputs before the first bad token, and its error."""
    specs: List[OutputSpec] = []
    for token in _tokens(text):
        try:
            spec = parse_output(token, text, cwd)
        except SpecError as err:
            return specs, err
        specs = [old for old in specs if old.key != spec.key]
        specs.append(spec)
    return specs, None


def format_filters(specs: Iterable[FilterSpec]) -> str:
    return " ".join(str(spec) for spec in specs)


def format_outputs(specs: Iterable[OutputSpec]) -> str:
    return " ".join(str(spec) for spec in specs)
