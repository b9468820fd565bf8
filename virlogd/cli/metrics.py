"""``virlogd-admin stats --openmetrics``: a ``stats`` answer in the OpenMetrics text format.

Pure: a stats object in, text out, so the numbers are exactly those ``stats --json`` shows.
node_exporter's textfile collector (or any Prometheus scraper of a file) can pick it up::

    virlogd-admin stats --openmetrics > /var/lib/node_exporter/virlogd.prom.$$ &&
        mv /var/lib/node_exporter/virlogd.prom.$$ /var/lib/node_exporter/virlogd.prom

Counters are families without the ``_total`` their samples carry (the format's rule);
every family has ``# TYPE`` and ``# HELP``; the text ends with ``# EOF``.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

Sample = Tuple[Dict[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(labels: Dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(str(value))}"'
                          for name, value in labels.items()) + "}"


def _number(value: Any) -> str:
    number = float(value or 0)
    return str(int(number)) if number.is_integer() else repr(number)


def _family(name: str, kind: str, help_text: str, samples: Iterable[Sample],
            unit: Optional[str] = None) -> List[str]:
    lines = [f"# TYPE {name} {kind}"]
    if unit:
        lines.append(f"# UNIT {name} {unit}")
    lines.append(f"# HELP {name} {_escape(help_text)}")
    suffix = "_total" if kind == "counter" else ""
    lines += [f"{name}{suffix}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return lines


def _unique_outputs(outputs: List[dict]) -> List[str]:
    """Each output's label; the same output twice (it cannot be, but a label set must be
    unique or the whole exposition is invalid) gets ``#2``."""
    seen: Dict[str, int] = {}
    names = []
    for out in outputs:
        name = str(out.get("output", "?"))
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


def render(stats: Dict[str, Any]) -> str:
    """The OpenMetrics exposition of *stats* (a ``stats`` answer), ``# EOF`` included."""
    outputs = list(stats.get("outputs") or [])
    names = _unique_outputs(outputs)
    buffer = stats.get("buffer") or {}
    followers = stats.get("followers") or {}
    per_output = lambda key: [({"output": name}, out.get(key, 0))      # noqa: E731
                              for name, out in zip(names, outputs)]
    lines: List[str] = []
    lines += _family("virlogd_records_received", "counter",
                     "Records received from clients (client socket and syslog input).",
                     [({}, stats.get("received", 0))])
    lines += _family("virlogd_records_own", "counter",
                     "Records of the daemon itself (start, admin changes, reports).",
                     [({}, stats.get("own", 0))])
    lines += _family("virlogd_records_dropped", "counter",
                     "Records dropped before any output, by reason.",
                     [({"reason": reason}, count)
                      for reason, count in sorted((stats.get("dropped") or {}).items())])
    lines += _family("virlogd_output_records_written", "counter",
                     "Records written, per output.", per_output("written"))
    lines += _family("virlogd_output_records_failed", "counter",
                     "Records an output failed to write, per output.", per_output("failed"))
    lines += _family("virlogd_output_records_dropped", "counter",
                     "Records an output dropped, per output.", per_output("dropped"))
    lines += _family("virlogd_output_failing", "gauge",
                     "1 while an output is failing (its last error stands), else 0.",
                     [({"output": name}, 1 if out.get("last_error") else 0)
                      for name, out in zip(names, outputs)])
    lines += _family("virlogd_clients", "gauge", "Clients connected.",
                     [({}, stats.get("clients", 0))])
    lines += _family("virlogd_followers", "gauge",
                     "virlogd-admin follow sessions connected.",
                     [({}, followers.get("connected", 0))])
    lines += _family("virlogd_follower_records_missed", "counter",
                     "Records followers missed because they read too slowly.",
                     [({}, followers.get("missed", 0))])
    lines += _family("virlogd_buffer_used_bytes", "gauge",
                     "Bytes of the ring buffer in use.", [({}, buffer.get("used", 0))],
                     unit="bytes")
    lines += _family("virlogd_buffer_size_bytes", "gauge",
                     "Size of the ring buffer (0: disabled).", [({}, buffer.get("size", 0))],
                     unit="bytes")
    lines += _family("virlogd_buffer_records_skipped", "counter",
                     "Records too large to keep in the ring buffer.",
                     [({}, buffer.get("skipped", 0))])
    lines += _family("virlogd_admin_changes", "counter",
                     "Settings changed through virlogd-admin (reverts of timed changes "
                     "included).", [({}, stats.get("admin_changes", 0))])
    lines += _family("virlogd_admin_reverts", "counter",
                     "Timed changes (--for) that reverted by themselves.",
                     [({}, stats.get("admin_reverts", 0))])
    lines += _family("virlogd_temporary_changes", "gauge",
                     "Timed changes (--for) in force.",
                     [({}, len(stats.get("temporary") or ()))])
    return "\n".join(lines) + "\n# EOF\n"
