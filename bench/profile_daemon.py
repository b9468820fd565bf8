"""Profile the daemon's hot path: ``profile_daemon.py [--sender c|record|frame] [--n N]
[--outputs SPEC] [--top K]``.

Runs a real ``virlogd`` under cProfile (same flags as the benchmark: five filters, 64 kB
ring), feeds it N records from one sender, stops it with SIGTERM (cProfile writes its data
on the way out) and prints the functions with the most time of their own, then by
cumulative time. Not part of ``make bench``: profiling slows the daemon down several-fold.
"""
from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import peers, scenarios  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sender", default="c", choices=("c", "record", "frame", "handler"))
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--outputs", default="")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="virlogd-prof.")
    prof = os.path.join(work, "daemon.prof")
    saved = peers.VIRLOGD
    wrapper = os.path.join(work, "virlogd-profiled")
    with open(wrapper, "w") as handle:
        handle.write(f"#!/bin/sh\nexec {sys.executable} -m cProfile -o {prof} -m virlogd "
                     f"\"$@\"\n")
    os.chmod(wrapper, 0o755)
    peers.VIRLOGD = wrapper
    try:
        senders = peers.build_senders(work)
        daemon = peers.Virlogd(os.path.join(work, "d"),
                               args.outputs or f"1:file:{work}/d/out.log")
        if args.sender == "c":
            cmd = [senders, "virlogd", daemon.socket, str(args.n), str(scenarios.MSGLEN),
                   "bench.io", "1"]
        else:
            cmd = [sys.executable, os.path.join(HERE, "pysender.py"), args.sender,
                   daemon.socket, str(args.n), str(scenarios.MSGLEN)]
        start, _end, _cpu = peers.run_sender(cmd)
        if not args.outputs:
            got, end = peers.Counter(f"{work}/d/out.log").wait(args.n)
            print(f"{got} records, {got / (end - start):,.0f}/s under the profiler")
        daemon.stop()
    finally:
        peers.VIRLOGD = saved
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
