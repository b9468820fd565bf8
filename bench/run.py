"""``make bench``: virlogd against rsyslog, journald and stdlib ``logging``, in one run.

    .venv/bin/python bench/run.py [--quick] [--reps N] [--scale F] [--only KEY,...]
                                  [--no-journald] [--write | --no-write]

Every peer is started here, by hand, on private sockets, and stopped by pid (bench/peers.py).
journald rows need root: the benchmark then re-executes itself inside ``unshare -m bash
ci/private-logging.sh``, which gives a private journald at the standard paths of a private
mount namespace; without root they are skipped. Rows run several times, interleaved (run 1 of
every row, then run 2...), so that the machine's noise spreads over all of them; before each
run the files of the runs before it are removed and the disk synced, so that no run pays for
another's writeback; every goal is a ratio to an anchor measured in the same run. ``--quick`` runs each row once at small N
(under a minute) to check that everything works, and writes nothing unless ``--write``.
The full run writes the table, the goals and the machine to docs/PERFORMANCE.md.
"""
from __future__ import annotations

import argparse
import os
import re
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench import peers, report, scenarios  # noqa: E402
from bench.report import Row  # noqa: E402

# key: (system, scenario, kind, note, full N, quick N, function(ctx, n), needs journald)
Spec = Tuple[str, str, str, str, int, int, Callable, bool]
S = scenarios
ROWS: Dict[str, Spec] = {
    # -- anchors, measured in this run
    "rsyslog_uds": ("rsyslog", "C client, 120 B datagrams -> imuxsock (private socket) -> omfile",
                    "rate", "stock omfile, RateLimit.Interval=0", 150_000, 20_000,
                    lambda c, n: S.rsyslog_uds(c, n), False),
    "rsyslog_uds8": ("rsyslog", "8 C clients concurrently -> imuxsock -> omfile", "rate", "",
                     200_000, 24_000, lambda c, n: S.rsyslog_uds(c, n, clients=8), False),
    "rsyslog_tcp": ("rsyslog", "C client, 121 B lines, TCP write() per msg -> imtcp -> omfile",
                    "rate", "", 300_000, 40_000, lambda c, n: S.rsyslog_tcp(c, n), False),
    "rsyslog_py": ("rsyslog", "Python SysLogHandler(unix path) -> imuxsock -> omfile", "rate",
                   "", 50_000, 5_000, lambda c, n: S.rsyslog_pysyslog(c, n), False),
    "journald_c": ("journald", "C client, native protocol datagrams (120 B) -> journal file",
                   "rate", "private instance; CPU = journald", 50_000, 5_000,
                   lambda c, n: S.journald_c(c, n), True),
    "stdlib_file": ("py logging", "logger.info() -> FileHandler, FMT (asctime/levelname/"
                    "funcName/lineno), per call", "us", "", 50_000, 10_000,
                    lambda c, n: S.micro(c, n, "stdlib_file"), False),
    "journald_relayed": ("journald", "C client, native datagrams with virlogd's fields for a "
                         "relayed record (OBJECT_PID...) -> journal file", "rate",
                         "what journald alone does with virlogd's entries", 50_000, 5_000,
                         lambda c, n: S.journald_c(c, n, relayed=True), True),
    "stdlib_floor": ("py logging", "logger.info() -> a handler whose emit() does nothing, per "
                     "call", "us", "the stdlib's own cost of a call: LogRecord, findCaller, "
                     "handler lock", 50_000, 10_000,
                     lambda c, n: S.micro(c, n, "stdlib_floor"), False),
    "stdlib_disabled": ("py logging", "logger.debug() while level=INFO (disabled call)", "us",
                        "includes the for-loop", 1_000_000, 200_000,
                        lambda c, n: S.micro(c, n, "stdlib_disabled"), False),
    # -- virlogd
    "v_py1": ("virlogd", "1 Python client (Client.send(Record)) -> daemon -> file; 5 filters, "
              "64 kB ring", "rate", "goal 1", 150_000, 20_000,
              lambda c, n: S.virlogd_py(c, n, "record"), False),
    "v_py1_pure": ("virlogd", "pure Python (VIRLOGD_PURE_PYTHON=1, daemon and client): 1 Python "
                   "client (Client.send(Record)) -> daemon -> file; 5 filters, 64 kB ring",
                   "rate", "goal P", 100_000, 10_000,
                   lambda c, n: S.virlogd_py(c, n, "record", pure=True), False),
    "v_c1": ("virlogd", "1 C client, one frame per write() -> daemon -> file; 5 filters, "
             "64 kB ring", "rate", "daemon capacity; same client as rsyslog's row", 150_000,
             20_000, lambda c, n: S.virlogd_c(c, n), False),
    "v_py8": ("virlogd", "8 Python clients (Client.send(Record)) concurrently -> daemon -> file",
              "rate", "goal 2", 200_000, 24_000,
              lambda c, n: S.virlogd_py(c, n, "record", clients=8), False),
    "v_c8": ("virlogd", "8 C clients, one frame per write() -> daemon -> file", "rate",
             "same clients as rsyslog's row", 200_000, 24_000,
             lambda c, n: S.virlogd_c(c, n, clients=8), False),
    "v_batch": ("virlogd", "batching client: Client(direct=False).send_frame(wire.encode_parts(...)) -> "
                "daemon -> file", "rate", "goal 3", 200_000, 20_000,
                lambda c, n: S.virlogd_py(c, n, "frame"), False),
    "v_handler_e2e": ("virlogd", "stdlib logging + VirlogdHandler -> daemon -> file", "rate",
                      "end to end", 100_000, 10_000,
                      lambda c, n: S.virlogd_py(c, n, "handler"), False),
    "v_journald": ("virlogd", "C client -> virlogd (1:journald) -> journald", "rate",
                   "goal 8; CPU = virlogd (journald's in the notes)", 50_000, 5_000,
                   lambda c, n: S.virlogd_journald(c, n), True),
    "v_handler": ("virlogd", "logger.info() -> VirlogdHandler (daemon running), per call",
                  "us", "goal 4; wall time incl. final flush", 50_000, 10_000,
                  lambda c, n: S.micro(c, n, "handler", needs_daemon=True), False),
    "v_lib_info": ("virlogd", "library log.info() -> 2:virlogd output, 64 kB ring, per call",
                   "us", "goal 5a", 50_000, 10_000,
                   lambda c, n: S.micro(c, n, "lib_info", needs_daemon=True), False),
    "v_lib_ring": ("virlogd", "library log.debug() reaching only the 64 kB ring, per call",
                   "us", "goal 5b", 100_000, 20_000,
                   lambda c, n: S.micro(c, n, "lib_debug_ring", needs_daemon=True), False),
    "v_lib_off": ("virlogd", "library log.debug() nothing wants (filtered, buffer 0), per call",
                  "us", "goal 5c; includes the for-loop", 1_000_000, 200_000,
                  lambda c, n: S.micro(c, n, "lib_disabled", needs_daemon=True), False),
}
ANCHORS = {"rsyslog imuxsock": "rsyslog_uds", "rsyslog imuxsock ×8": "rsyslog_uds8",
           "rsyslog imtcp": "rsyslog_tcp", "journald": "journald_c",
           "stdlib FileHandler call": "stdlib_file", "stdlib disabled call": "stdlib_disabled"}


def machine(journald: bool) -> Dict[str, str]:
    def first_line(cmd: List[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "not found"
    try:
        qlen = open("/proc/sys/net/unix/max_dgram_qlen").read().strip()
    except OSError:
        qlen = "?"
    return {"host": platform.node(), "cpus": str(os.cpu_count()), "kernel": platform.release(),
            "python": platform.python_version(), "max_dgram_qlen": qlen,
            "rsyslog": first_line(["rsyslogd", "-v"]).split(" compiled")[0].strip(),
            "systemd": first_line(["journalctl", "--version"]),
            "journald rows": "yes (private namespace)" if journald else "skipped (needs root)",
            "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3])}


def goals(rows: Dict[str, Row], once: Dict[str, "scenarios.Sample"],
          ready: List[float]) -> List[Tuple[str, str, str]]:
    """(goal, met / not met / not measured, figures): every goal a ratio to an anchor of
    the same run (4 and 8 as the shares that are virlogd's own)."""
    out = []

    def have(*keys):
        return all(k in rows and rows[k].ok for k in keys)

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    def rate(goal: str, mine: str, anchor: str, least: float, no_loss: bool = False) -> None:
        if have(mine, anchor):
            v, r = rows[mine], rows[anchor]
            ratio = v.rate / r.rate
            ok = ratio >= least and (not no_loss or v.lost_total() == 0)
            out.append((goal, verdict(ok), f"{report.si(v.rate)}/s vs {report.si(r.rate)}/s = "
                        f"{ratio:.2f}×" + (f", lost {v.lost()}" if no_loss else "")))

    def per_call(goal: str, mine: str, anchor: str, most: float) -> None:
        if have(mine, anchor):
            v, r = rows[mine], rows[anchor]
            out.append((goal, verdict(v.us / r.us <= most),
                        f"{v.us:.3f} µs vs {r.us:.3f} µs = {v.us / r.us:.3f}×"))

    rate("1a. one client vs rsyslog imuxsock ≥ 3.0×, zero loss", "v_py1", "rsyslog_uds", 3.0,
         no_loss=True)
    if have("v_py1", "rsyslog_uds"):
        v, r = rows["v_py1"], rows["rsyslog_uds"]
        cpu = v.per_million("daemon_cpu") / r.per_million("daemon_cpu")
        out.append(("1b. daemon CPU per record ≤ 0.25× rsyslog's", verdict(cpu <= 0.25),
                    f"{v.per_million('daemon_cpu'):.2f} vs {r.per_million('daemon_cpu'):.2f} "
                    f"CPU-s/1M = {cpu:.2f}×"))
    rate("1 (the same C client as rsyslog's, for the daemon alone)", "v_c1", "rsyslog_uds", 3.0,
         no_loss=True)
    rate("2. eight clients vs rsyslog imuxsock ×8 ≥ 3.0×, zero loss", "v_py8", "rsyslog_uds8",
         3.0, no_loss=True)
    rate("3. batching client vs rsyslog imtcp ≥ 1.0×", "v_batch", "rsyslog_tcp", 1.0)
    if have("v_handler", "stdlib_file", "stdlib_floor"):
        # what each handler adds to a call: the same call minus the stdlib's own floor (a
        # handler that does nothing); below the floor only logging itself could go faster
        v, r, f = rows["v_handler"].us, rows["stdlib_file"].us, rows["stdlib_floor"].us
        out.append(("4. what VirlogdHandler adds beyond stdlib's floor ≤ 0.25× what "
                    "FileHandler adds", verdict(v - f <= 0.25 * (r - f)),
                    f"{v - f:.2f} µs vs {r - f:.2f} µs = {(v - f) / (r - f):.2f}× "
                    f"(calls {v:.2f} and {r:.2f} µs, floor {f:.2f} µs)"))
    per_call("5a. log.info to the daemon ≤ 0.20× a FileHandler call", "v_lib_info",
             "stdlib_file", 0.20)
    per_call("5b. debug call reaching only the ring ≤ 0.05× a FileHandler call", "v_lib_ring",
             "stdlib_file", 0.05)
    per_call("5c. call nothing wants ≤ 1.0× stdlib's disabled call", "v_lib_off",
             "stdlib_disabled", 1.0)
    rate("P. pure Python (daemon and client), one client vs rsyslog imuxsock ≥ 1.5×",
         "v_py1_pure", "rsyslog_uds", 1.5, no_loss=True)
    mem = once.get("memory")
    if mem is not None:
        e = mem.extra
        out.append((f"6a. RSS after {mem.n:,} records within 10% of RSS after the first batch",
                    verdict(mem.value <= 1.10),
                    f"{e['rss_small_kb']:,} kB -> {e['rss_big_kb']:,} kB = {mem.value:.3f}×, "
                    f"lost {mem.lost}"))
        out.append(("6b. ring never holds more than log_buffer_size",
                    verdict(e["ring_used"] <= e["ring_size"]),
                    f"used {e['ring_used']:,} of {e['ring_size']:,} bytes"))
    dmp = once.get("dump")
    if dmp is not None:
        out.append(("7a. dump of a full 64 kB buffer ≤ 10 ms", verdict(dmp.value <= 10.0),
                    f"{dmp.value:.2f} ms median ({dmp.extra['min_ms']:.2f}–"
                    f"{dmp.extra['max_ms']:.2f}), {dmp.extra['records']} records, admin round "
                    f"trip"))
    if ready:
        med = report.median(ready) * 1000
        out.append(("7b. start to READY=1 ≤ 300 ms", verdict(med <= 300),
                    f"{med:.0f} ms median ({min(ready) * 1000:.0f}–{max(ready) * 1000:.0f}) "
                    f"over {len(ready)} starts"))
    if have("v_journald", "journald_relayed"):
        # a relayed record carries OBJECT_PID, so journald looks the client up and attaches
        # its comm/exe/cmdline to every entry: the journald_relayed row sends exactly those
        # entries straight to journald, so its CPU per entry is journald's own share
        v, j = rows["v_journald"], rows["journald_relayed"]
        mine, theirs = v.per_million("daemon_cpu"), j.per_million("daemon_cpu")
        out.append(("8. virlogd's CPU per record relayed to journald ≤ 0.5× journald's own "
                    "CPU per entry", verdict(mine <= 0.5 * theirs),
                    f"{mine:.2f} vs {theirs:.2f} CPU-s/1M = {mine / theirs:.2f}× "
                    f"({report.si(v.rate)}/s through virlogd)"))
    return out


def maybe_reexec(args) -> bool:
    """Re-run inside a private mount namespace with a private journald; True if journald
    rows can run in this process."""
    if os.environ.get("PRIVLOG_JOURNALD_PID"):
        return True
    if args.no_journald or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return False
    os.chdir(ROOT)
    os.execvp("unshare", ["unshare", "-m", "bash", "ci/private-logging.sh", sys.executable,
                          os.path.abspath(__file__)] + sys.argv[1:])
    return False  # not reached


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each row once, small N (< 60 s)")
    p.add_argument("--reps", type=int, help="runs per row (default 7; quick 1)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every N")
    p.add_argument("--only", help="comma-separated row keys (anchors are not added)")
    p.add_argument("--no-journald", action="store_true", help="skip the journald rows")
    p.add_argument("--write", dest="write", action="store_true", default=None,
                   help="write docs/PERFORMANCE.md (default: yes unless --quick)")
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args(argv)
    journald = maybe_reexec(args)
    reps = args.reps or (1 if args.quick else 7)
    write = (not args.quick) if args.write is None else args.write
    keys = [k for k in ROWS if not args.only or k in args.only.split(",")]
    keys = [k for k in keys if journald or not ROWS[k][7]]
    info = machine(journald)
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="virlogd-bench.")
    rows = {k: Row(k, *ROWS[k][:4]) for k in keys}
    once: Dict[str, scenarios.Sample] = {}
    probes: List[float] = []
    try:
        ctx = scenarios.Context(workdir, peers.build_senders(workdir),
                                int(os.environ["PRIVLOG_JOURNALD_PID"]) if journald else None)
        for rep in range(reps):
            for key in keys:
                spec = ROWS[key]
                n = max(1000, int((spec[5] if args.quick else spec[4]) * args.scale))
                ctx.settle()
                probes.append(steadiness_probe())
                try:
                    rows[key].samples.append(spec[6](ctx, n))
                except Exception as err:  # noqa: BLE001 - one broken row must not stop the rest
                    rows[key].errors.append(f"{type(err).__name__}: {err}")
                    traceback.print_exc()
                s = rows[key].samples[-1] if rows[key].samples else None
                shown = "error" if s is None else (f"{s.rate:,.0f}/s lost {s.lost}"
                                                   if ROWS[key][2] == "rate"
                                                   else f"{s.value:.3f} µs")
                print(f"[{time.monotonic() - t_start:6.1f}s] run {rep + 1}/{reps} {key}: "
                      f"{shown}", file=sys.stderr, flush=True)
        if not args.only:
            small, big = (20_000, 200_000) if args.quick else (100_000, 5_000_000)
            for name, fn in (("memory", lambda: scenarios.memory(ctx, small, big)),
                             ("dump", lambda: scenarios.dump(ctx, 3 if args.quick else 9))):
                try:
                    once[name] = fn()
                    print(f"[{time.monotonic() - t_start:6.1f}s] {name}: {once[name].value:.3f}",
                          file=sys.stderr, flush=True)
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    info["total"] = f"{time.monotonic() - t_start:.0f} s"
    info["runs per row"] = str(reps)
    if probes:
        probes.sort()
        info["steadiness"] = (f"a fixed pure-Python loop, timed before every run of a row, "
                              f"took {probes[0]:.1f}–{probes[-1]:.1f} ms (median "
                              f"{probes[len(probes) // 2]:.1f}, {len(probes)} probes)")
    text = render(rows, once, goals(rows, once, ctx.ready_times), info, args)
    print(text)
    if write:
        path = os.path.join(ROOT, "docs", "PERFORMANCE.md")
        text += previous_goals(path)
        with open(path, "w") as handle:
            handle.write(text)
        print(f"wrote {os.path.join(ROOT, 'docs', 'PERFORMANCE.md')}", file=sys.stderr)
    return 0


def steadiness_probe() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): the same figure all run long
    on a steady machine. These shared machines switch between speeds about 2x apart for
    tens of seconds, which is why every goal is a ratio of interleaved medians; the spread
    printed in the header says how much to trust a run."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(100_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def previous_goals(path: str) -> str:
    """The goals of the run before, kept below this run's: a goal holds when it holds in two
    runs, and one file then shows both (only the latest run's table of rows is kept)."""
    try:
        with open(path) as handle:
            old = handle.read()
    except OSError:
        return ""
    stamp = re.search(r"^Run (.*?) —", old, re.M)
    goals = re.search(r"^## Goals\n\n(\|.*?\n)\n", old, re.S | re.M)
    if stamp is None or goals is None or "(quick)" in stamp.group(1):
        return ""
    return f"\n## Goals of the run before ({stamp.group(1)})\n\n{goals.group(1)}"


def render(rows, once, goal_list, info, args) -> str:
    anchors = {label: rows[key] for label, key in ANCHORS.items() if key in rows}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out = ["# virlogd performance", "",
           "Written by `make bench` (`bench/run.py`); do not edit by hand. Method: "
           "two-process rows time N records "
           "from the sender's first send to the last line in the receiver's file (start-up "
           "excluded), every row runs several times interleaved with the others, each run "
           "after the files of the runs before it were removed and the disk synced, and every "
           "goal is a ratio to an anchor measured in the same run. Messages are 120-byte "
           "records. CPU = seconds per million records: daemon/receiver (all threads) ; "
           "client(s).", "",
           f"Run {stamp}{' (quick)' if args.quick else ''} — " +
           ", ".join(f"{k}: {v}" for k, v in info.items()), "",
           report.table(list(rows.values()), anchors), "", "## Goals", "",
           "| goal | verdict | figures |", "|---|---|---|"]
    out += [f"| {g} | {v} | {f} |" for g, v, f in goal_list]
    out += ["", "## Notes", ""]
    mem, dmp = once.get("memory"), once.get("dump")
    if mem is not None:
        out.append(f"- Memory: {mem.n:,} records from a C client (64 frames per write) into "
                   f"one daemon (file output, 5 filters, 64 kB ring): RSS "
                   f"{mem.extra['rss_small_kb']:,} kB after the first batch, "
                   f"{mem.extra['rss_big_kb']:,} kB at the end; lost {mem.lost}.")
    if dmp is not None:
        out.append(f"- Dump: `virlogd-admin dump` request over the admin socket with a full "
                   f"64 kB ring ({dmp.extra['records']} records), median of {dmp.n}.")
    vj = rows.get("v_journald")
    if vj is not None and vj.ok:
        jc = report.median([s.extra["journald_cpu"] / s.n * 1e6 for s in vj.samples])
        out.append(f"- virlogd -> journald: journald itself used {jc:.2f} CPU-s per million "
                   f"behind virlogd.")
    if "journald_relayed" in rows:
        out.append("- Goal 8: a relayed record carries `OBJECT_PID`, so that `journalctl` names "
                   "the real sender, and journald then looks the client up and adds its "
                   "`OBJECT_COMM`, `OBJECT_EXE`, `OBJECT_CMDLINE`... to every entry: the "
                   "`journald_relayed` row sends exactly those entries straight to journald, "
                   "naming another live process as virlogd names its client, so its CPU per "
                   "entry is journald's own, and goal 8 compares virlogd's CPU per record with "
                   "it.")
    if "stdlib_floor" in rows:
        out.append("- Goal 4: a `logging` call costs the floor row (LogRecord, findCaller, the "
                   "handler lock) before any handler works; below the floor only `logging` "
                   "itself could go faster, so goal 4 compares what each handler adds to it.")
    if "v_handler" in rows or "v_lib_info" in rows:
        out.append("- Goals 4 and 5a include one `send` system call per record: each record "
                   "reaches the kernel before the logging call returns whenever the socket "
                   "can take it, so a program that dies right after the call loses nothing. "
                   "`VirlogdHandler(direct=False)` / `Client(direct=False)` batch instead.")
    out.append(f"- Compiled speedups (`virlogd/_speedups.c`): "
               f"{'built and used' if _compiled() else 'NOT in use: pure Python'}.")
    out.append("- The `v_py*` rows are the goals' rows (the product's own Python client); the "
               "`C client` rows feed the daemon with the same kind of client rsyslog gets, "
               "to show what the daemon alone can take.")
    out += report.compiled_and_pure()
    return "\n".join(out) + "\n"


def _compiled() -> bool:
    from virlogd.core import speedups
    return speedups.compiled()


if __name__ == "__main__":
    sys.exit(main())
