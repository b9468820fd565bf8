"""Turning samples into the table, the goals and docs/PERFORMANCE.md (pure: no processes)."""
from __future__ import annotations

import statistics
from typing import Dict, List, Optional, Sequence


def si(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.0f}k"
    return f"{rate:.0f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Row:
    """One benchmark row and its samples over the interleaved runs."""

    def __init__(self, key: str, system: str, scenario: str, kind: str, note: str = "") -> None:
        self.key = key
        self.system = system
        self.scenario = scenario
        self.kind = kind            # "rate", "us" (µs per call), "once" (special rows)
        self.note = note
        self.samples: list = []
        self.errors: List[str] = []

    # -- aggregates ----------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return bool(self.samples)

    def rates(self) -> List[float]:
        return [s.rate for s in self.samples]

    @property
    def rate(self) -> float:
        return median(self.rates())

    @property
    def us(self) -> float:
        if self.kind == "us":
            return median([s.value for s in self.samples])
        return 1e6 / self.rate if self.rate else float("nan")

    def per_million(self, attr: str) -> Optional[float]:
        values = [getattr(s, attr) / s.n * 1e6 for s in self.samples
                  if getattr(s, attr) is not None and s.n]
        return median(values) if values else None

    def lost(self) -> str:
        if not self.samples or self.samples[0].lost is None:
            return "n/a"
        return f"{sum(s.lost for s in self.samples)} / {sum(s.n for s in self.samples)}"

    def lost_total(self) -> int:
        return sum(s.lost or 0 for s in self.samples)

    def cell(self) -> str:
        if not self.ok:
            return "FAILED"
        if self.kind == "rate":
            rates = self.rates()
            return f"**{si(median(rates))}/s** ({si(min(rates))}–{si(max(rates))})"
        values = [s.value for s in self.samples]
        return f"**{median(values):.3f} µs** ({min(values):.3f}–{max(values):.3f})"


def ratio_text(row: Row, anchors: Dict[str, Row]) -> str:
    if not row.ok:
        return ""
    parts = []
    for label, anchor in anchors.items():
        if anchor is row or not anchor.ok or anchor.kind != row.kind:
            continue
        if row.kind == "rate":
            parts.append(f"{row.rate / anchor.rate:.2f}× {label}")
        else:
            parts.append(f"{row.us / anchor.us:.2f}× {label}")
    return ", ".join(parts)


def table(rows: Sequence[Row], anchors: Dict[str, Row]) -> str:
    lines = ["| # | system | scenario | median (min–max) | µs/msg | CPU s per 1M: daemon ; "
             "client | losses | N × runs | ratio to the anchors of this run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        d, c = row.per_million("daemon_cpu"), row.per_million("client_cpu")
        cpu = f"{'-' if d is None else f'{d:.2f}'} ; {'-' if c is None else f'{c:.2f}'}"
        n = f"{row.samples[0].n:,} × {len(row.samples)}" if row.ok else "-"
        scen = row.scenario + (f" *({row.note})*" if row.note else "")
        if row.errors:
            scen += f" **error: {row.errors[0][:160]}**"
        lines.append(f"| {i} | {row.system} | {scen} | {row.cell()} | "
                     f"{row.us:.3f} | {cpu} | {row.lost()} | {n} | {ratio_text(row, anchors)} |"
                     if row.ok else
                     f"| {i} | {row.system} | {scen} | FAILED | | | | | |")
    return "\n".join(lines)


# Static prose of docs/PERFORMANCE.md: what the figures are about and how to read them. It
# lives here, not in the README, so that every `make bench` writes it beside the figures.
COMPILED_AND_PURE = """\
## Compiled and pure Python

virlogd is complete in pure Python. Only the per-record data work (decoding and encoding \
frames, packing and formatting a record, appending to and reading the ring buffer) also \
exists in C, in one module, `virlogd/_speedups.c`, which `scripts/setup.sh` builds with the \
same `gcc` and `python3-dev` that systemd-python needs; `virlogd/core/speedups.py` is the \
one place that chooses it. A compiled function takes the common case and hands every \
other input to its pure-Python twin, so the two give the same results (the tests compare \
them) and every error message is written once, in Python: the compiled module changes how \
fast the program runs, never what it does. Without a compiler the build skips it and the \
same program runs in pure Python; `VIRLOGD_PURE_PYTHON=1` forces pure Python anyway, to \
compare or to rule the C out while debugging (`VIRLOGD_PURE_PYTHON=1 make bench` measures \
it). The notes above say which one this run used; `./test` fails in CI (`CI` set) when the \
module was not built, so the figures and the tests are about the code that ships.

How to read the figures: each row is the median of its runs, with the slowest and the \
fastest in brackets. The runs of all rows are interleaved, and the figures move with how \
busy the shared machine is (the steadiness line at the top says how steady this run was), \
so every goal is a ratio to an anchor (rsyslog, journald, stdlib `logging`) measured in the \
same run, never an absolute figure from another day.
"""


def compiled_and_pure() -> List[str]:
    """The static section on what is compiled, as lines for the report."""
    return ["", *COMPILED_AND_PURE.rstrip("\n").split("\n")]
