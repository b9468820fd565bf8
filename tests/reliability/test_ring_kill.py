"""The ring file after a SIGKILL at a random instant: what ``recover()`` returns is always
records that were really appended, whole and in order — never bytes of a half-written one.

A writer process fills a small ring file (so nearly every append overwrites the oldest
entries) with self-checking entries, and is killed after a random delay. Both the C core and
the pure-Python ring are killed the same number of times. The figures are printed (``-s``)
for docs/RELIABILITY.md.
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from virlogd.core import speedups
from virlogd.core.ring import RingBuffer

WRITER = textwrap.dedent("""
    import sys, zlib
    from virlogd.core.ring import RingBuffer
    ring = RingBuffer(200, sys.argv[1])
    n = 0
    while True:
        body = b"%08d" % n + b"x" * (n % 23)
        ring.append(b"%08x" % zlib.crc32(body) + body)
        if n == 0:
            print("ready", flush=True)       # something to recover from here on
        n += 1
""")
KILLS = 100


def whole(entry):
    import zlib
    return len(entry) >= 16 and entry[:8] == b"%08x" % zlib.crc32(entry[8:])


@pytest.mark.parametrize("impl", ["c", "py"])
def test_a_killed_writer_leaves_only_whole_records_to_recover(tmp_path, impl):
    if impl == "c" and not speedups.built():
        pytest.fail("the C ring core is not built") if os.environ.get("CI") else \
            pytest.skip("the C ring core is not built")
    rng = random.Random(20261125)
    path = str(tmp_path / "ring")
    recovered_runs = entries_seen = 0
    for _ in range(KILLS):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, path, impl],
                                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, VIRLOGD_PURE_PYTHON="1" if impl == "py"
                                           else os.environ.get("VIRLOGD_PURE_PYTHON", "")))
        assert writer.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0005, 0.02))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        entries = RingBuffer.recover(path)
        assert entries is not None, "a killed writer's file must be recoverable"
        bad = [e for e in entries if not whole(e)]
        assert bad == [], f"recovered {len(bad)} damaged entries, e.g. {bad[0]!r}"
        numbers = [int(e[8:16]) for e in entries]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), \
            "recovered entries must be consecutive: none lost from the middle"
        recovered_runs += 1
        entries_seen += len(entries)
        os.unlink(path)
    print(f"\n{impl}: {KILLS} kills, {recovered_runs} recovered, {entries_seen} entries, "
          f"0 damaged")
