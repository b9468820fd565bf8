"""Config files: TOML text through ``settings.load`` to settings and problems, then a daemon.

Each input is the whole of a config file, written to the scratch directory and loaded as
``virlogd --config FILE`` would (no environment, no flags). Loading never raises: what cannot
be used is a problem sentence (one line), and a file that is not TOML is ``fatal``.
``--check-config``'s rendering must then be TOML that gives the same values back, and, when
the start would go on, a daemon is set up from the settings as ``Daemon.start`` does (ring,
outputs, router; the ring capped at 1 MiB here, as the fuzzer is no place for a 1 GiB
buffer) and routes a record at each level, one with a stack, and a dump.
"""
import os
import tomllib

from harness import SCRATCH, FuzzDaemon, add_check, check, record, settings

PATH = os.path.join(SCRATCH, "virlogd.conf")
RECORDS = [record.Record(priority, source, f"message at {priority}", time=1_700_000_000.0,
                         func="virFuzz", line=priority, stack="Traceback: here")
           for priority in (1, 2, 3, 4) for source in ("qemu.monitor", "util.log", "x")]


def setup():
    def one_input(data: bytes) -> None:
        with open(PATH, "wb") as handle:
            handle.write(data)
        s = settings.load(config_file=PATH, explicit=True, env={}, flags={}, cwd=SCRATCH)
        for problem in s.problems:
            if not isinstance(problem, str) or "\n" in problem:
                raise AssertionError(f"problem is not one sentence: {problem!r}")
        if s.fatal is not None:
            if not s.fatal.startswith(PATH):
                raise AssertionError(f"fatal error does not name the file: {s.fatal!r}")
            return
        rendered = settings.render(s)              # --check-config: valid TOML, same values
        again = tomllib.loads(rendered)
        for name, value in again.items():
            if name not in ("socket_perms", "log_outputs") and value != s.values[name]:
                raise AssertionError(f"--check-config shows {name} = {value!r}, "
                                     f"not {s.values[name]!r}")
        d = FuzzDaemon(s, "config")
        try:
            d.start_routing()
            add_check(d)
            d.router.route_many(RECORDS)
            d.router.dump("fuzz")
            check()
        finally:
            d.close()
    return one_input
