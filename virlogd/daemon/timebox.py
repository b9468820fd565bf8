"""Time-boxed admin changes: ``virlogd-admin daemon-log-filters "1:qemu" --for 10m``.

Debug left on by mistake, filling a disk, is a well-known support story; a change made
``--for`` a while undoes itself. The rules:

- The change applies at once, like any other (all-or-nothing, the same audit line, which
  also says for how long). When the time is up the daemon sets the value that was in force
  before it, through the same setter, so the revert has its own audit line too.
- Another timed change of the same setting while one runs replaces it and starts a new
  time, and still reverts to the value before the *first* one: stacking ``--for`` never
  makes a debug setting permanent.
- A permanent change of that setting (no ``--for``) replaces the timed one and cancels its
  revert: the last word is the administrator's, not the timer's.
- Timed changes, like every admin change, last at most until the daemon restarts.

Timers are the daemon's event loop's (``loop.call_later``): no thread. A timer has no
cancel, so each change is an object and a timer reverts only if its change is still the
one in force.
"""
from __future__ import annotations

import math
import re
import time
from typing import Callable, Dict, List, Optional

from ..core.errors import ConfigError

MAX_SECONDS = 7 * 24 * 3600          # a week: longer than any debugging session
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
EXAMPLES = "30s, 10m, 1h or 1h30m"


def parse_duration(text: str) -> int:
    """Seconds in *text* (``30s``, ``10m``, ``1h``, ``1h30m``, ``2h5m10s``); ConfigError with
    the user's sentence otherwise."""
    found = _DURATION.match(text)
    if not text or found is None:
        raise ConfigError(f"invalid duration '{text}' for --for: expected hours, minutes "
                          f"and seconds such as {EXAMPLES}")
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"invalid duration '{text}' for --for: it must be at least 1s")
    if total > MAX_SECONDS:
        raise ConfigError(f"invalid duration '{text}' for --for: at most 168h (a week)")
    return total


def format_duration(seconds: float) -> str:
    """``1h2m3s`` for 3723 (whole seconds, rounded up; zero parts left out; ``0s``)."""
    left = max(0, math.ceil(seconds))
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + \
        (f"{secs}s" if secs else "")
    return text or "0s"


class _Change:
    __slots__ = ("setting", "value", "reverts_to", "duration", "deadline", "who")

    def __init__(self, setting: str, value: str, reverts_to: str, duration: int,
                 deadline: float, who: str) -> None:
        self.setting = setting
        self.value = value
        self.reverts_to = reverts_to
        self.duration = duration
        self.deadline = deadline
        self.who = who


class TimeBoxes:
    """The timed changes in force, one per setting at most.

    *settings* maps a setting's name (the admin command: ``daemon-log-filters``...) to
    ``(get, put)``: *get* returns the value as a string that *put(text, who)* accepts and
    that restores it exactly (``""`` for the default output, not its name); *put* raises
    ConfigError to refuse. *report(message)* logs what the daemon cannot do by itself (a
    revert refused, e.g. an output that no longer opens).
    """

    def __init__(self, loop, settings: Dict[str, tuple], report: Callable[[str], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loop = loop
        self.settings = settings
        self.report = report
        self.clock = clock
        self.changes: Dict[str, _Change] = {}
        self.reverted = 0

    def set(self, setting: str, value: str, who: str, duration_text: str) -> None:
        """Set *setting* to *value* for *duration_text*; then it reverts by itself."""
        duration = parse_duration(duration_text)
        get, put = self.settings[setting]
        running = self.changes.get(setting)
        reverts_to = running.reverts_to if running is not None else str(get())
        put(value, f"{who} for {format_duration(duration)}")     # may refuse: nothing changes
        change = _Change(setting, value, reverts_to, duration, self.clock() + duration, who)
        self.changes[setting] = change
        self.loop.call_later(duration, lambda: self._expire(change))

    def permanent(self, setting: str) -> Optional[_Change]:
        """A permanent change of *setting* was made: its timed change, if any, ends without
        a revert; returns it."""
        return self.changes.pop(setting, None)

    def running(self, setting: str) -> Optional[_Change]:
        return self.changes.get(setting)

    def _expire(self, change: _Change) -> None:
        if self.changes.get(change.setting) is not change:
            return                  # replaced or made permanent since: nothing to undo
        del self.changes[change.setting]
        _get, put = self.settings[change.setting]
        who = (f"virlogd, reverting the change for {format_duration(change.duration)} by "
               f"{change.who}")
        try:
            put(change.reverts_to, who)
        except ConfigError as err:
            self.report(f"could not revert the change of {change.setting} for "
                        f"{format_duration(change.duration)} by {change.who} to "
                        f"\"{change.reverts_to}\": {err}; it stays in force")
            return
        self.reverted += 1

    def describe(self, setting: str) -> Optional[dict]:
        """What ``virlogd-admin`` shows of a timed change of *setting*, or None."""
        change = self.changes.get(setting)
        if change is None:
            return None
        return {"setting": setting, "value": change.value, "reverts_to": change.reverts_to,
                "for": format_duration(change.duration), "by": change.who,
                "remaining": round(max(0.0, change.deadline - self.clock()), 3)}

    def listing(self) -> List[dict]:
        return [self.describe(setting) for setting in sorted(self.changes)]
