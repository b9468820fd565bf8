"""The fuzz harness: one libFuzzer process per target, run as ``python fuzz/harness.py TARGET``.

What it sets up before the target sees a byte (``fuzz/run.py`` starts it; see its docstring):

- the compiled speedups built with AddressSanitizer, UndefinedBehaviorSanitizer and
  libFuzzer's coverage (``build/fuzz/lib/virlogd/_speedups*.so``, made by ``fuzz/build.py``) are the ones
  imported, never the in-place ``.so`` files the test suite uses; ``VIRLOGD_PURE_PYTHON=1``
  runs the same target with no C at all;
- every ``virlogd`` module imported under atheris's bytecode instrumentation, so libFuzzer
  sees the Python branches as well as the C edges;
- the real router, ring and outputs, once per *profile* (the settings a record is routed
  under): the defaults (level 3, 64 kB ring, no filters) and five others. Each decoded
  record goes through every profile.

Outputs are confined, because fuzzed output strings name arbitrary paths and destinations:
a file output writes into the run's scratch directory (one of eight files, picked by a hash of
the path), stderr goes to /dev/null (the real ``flush()`` runs; only its ``os.write(2, ...)``
is redirected, so libFuzzer's and the sanitizers' reports still reach the terminal), and a
syslog, journald, virlogd or remote output is a sink that keeps nothing, or refuses to open,
again by a hash of its spec (both paths of an all-or-nothing change get exercised).

The property is the issue's: nothing raises past the boundary, nothing crashes, nothing hangs.
An exception out of a boundary (the server's read callback, the syslog input's read, the admin
server's read callback, ``settings.load``, the spec parsers) is a finding: atheris reports it
and libFuzzer saves the input. A crash is one too (the sanitizers abort), and so is an input
that takes longer than ``-timeout`` seconds.
"""
from __future__ import annotations

import errno
import glob
import importlib.abc
import importlib.util
import os
import re
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SANITIZED = os.path.join(ROOT, "build", "fuzz", "lib", "virlogd")
PURE = os.environ.get("VIRLOGD_PURE_PYTHON", "") == "1"
EXTENSION = "virlogd._speedups"


class _SanitizedTwins(importlib.abc.MetaPathFinder):
    """Imports ``virlogd._speedups`` from build/fuzz instead of the package directory."""

    def find_spec(self, name, path=None, target=None):
        if name != EXTENSION:
            return None
        found = glob.glob(os.path.join(SANITIZED, name.split(".", 1)[1] + ".cpython-*.so"))
        if not found:
            raise ImportError(f"fuzz: no sanitized build of {name} in {SANITIZED} "
                              f"(run fuzz/build.py)")
        return importlib.util.spec_from_file_location(name, found[0])


# ``harness.py TARGET --replay PATH...``: each input once, in this process, with whichever
# speedups are built in place and no atheris (tests/fuzz/test_findings.py: the corpus and the
# findings as plain regression tests)
REPLAY = "--replay" in sys.argv
sys.path.insert(0, ROOT)
if not PURE and not REPLAY:
    sys.meta_path.insert(0, _SanitizedTwins())

if REPLAY:
    import contextlib

    def _instrumented():
        return contextlib.nullcontext()
else:
    import atheris

    def _instrumented():
        return atheris.instrument_imports(include=["virlogd"])


with _instrumented():
    import virlogd  # noqa: E402,F401
    from virlogd.daemon import admin, daemon, server
    from virlogd.core import record, ring, router, settings, speedups
    from virlogd.core import specs, textformat  # noqa: E402,F401
    from virlogd.daemon import syslog_input  # noqa: E402,F401
    from virlogd.protocol import wire  # noqa: E402,F401
    from virlogd.core.filters import FilterSet  # noqa: E402
    from virlogd.outputs import base, file as file_output, stderr as stderr_output  # noqa
    from virlogd.outputs.base import Output, OutputContext  # noqa: E402
    from virlogd.core.ring import RingBuffer  # noqa: E402
    from virlogd.core.router import Router, RouterState  # noqa: E402


def check_twins() -> str:
    """Which implementation runs; refuses to fuzz a mix (an unsanitized build, or the
    extension in a pure run)."""
    module = sys.modules.get(EXTENSION)
    if REPLAY and not PURE:
        if not speedups.compiled():
            raise SystemExit("fuzz: virlogd._speedups is not built in place")
        return "compiled speedups (in place, no sanitizers)"
    if PURE:
        if speedups.compiled():
            raise SystemExit("fuzz: virlogd._speedups loaded although VIRLOGD_PURE_PYTHON=1")
        return "pure Python"
    if not speedups.compiled() or module is None or \
            not os.path.abspath(module.__file__).startswith(SANITIZED):
        raise SystemExit(f"fuzz: virlogd._speedups is not the sanitized build "
                         f"({getattr(module, '__file__', None)})")
    return "compiled speedups with ASan+UBSan"


# -- scratch space and confined outputs ----------------------------------------------------
SCRATCH = os.environ.get("FUZZ_SCRATCH") or os.path.join(ROOT, "build", "fuzz", "scratch")
os.makedirs(SCRATCH, exist_ok=True)
_DEVNULL = os.open(os.devnull, os.O_WRONLY)


class _StderrToNull:
    """``os`` as the stderr output sees it: the same module, but fd 2 is /dev/null."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def write(fd, data):
        return os.write(_DEVNULL if fd == 2 else fd, data)


stderr_output.os = _StderrToNull()


class Sink(Output):
    """A non-text output that keeps nothing (syslog, journald, virlogd, remote)."""

    def emit(self, record, line) -> None:
        pass


def _hash(text) -> int:
    return zlib.crc32(str(text).encode("utf-8", "surrogateescape"))


def _confined_file(spec):
    """*spec* (a file output) writing into SCRATCH instead: one of eight files."""
    return specs.OutputSpec(spec.priority, "file",
                            os.path.join(SCRATCH, f"out-{_hash(spec.name) % 8}.log"))


def confined_build(spec, ctx):
    """``outputs.build`` for the fuzzer: same classes where harmless, never outside SCRATCH."""
    if spec.dest == "stderr":
        return stderr_output.StderrOutput(spec, ctx)
    if spec.dest == "file":
        out = file_output.FileOutput(_confined_file(spec), ctx)
        out.spec = spec       # describe() and the reuse check see what was asked for
        return out
    if _hash(spec) % 4 == 0:
        raise OSError(errno.ECONNREFUSED, "refused by the fuzz harness")
    return Sink(spec, ctx)


class _ConfinedProbe:
    """``outputs.probe`` as the daemon sees it: a file output is probed at the path it will
    really write (in SCRATCH), so no fuzzed path on the host is ever opened; the other
    destinations are confined_build's to accept or refuse."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def problem(self, spec, **kw):
        if spec.dest != "file":
            return None
        return self._real.problem(_confined_file(spec), **dict(kw, create_dirs=False))


daemon.build = confined_build
if hasattr(daemon, "probe"):
    daemon.probe = _ConfinedProbe(daemon.probe)
CTX = OutputContext(max_size=512 * 1024, max_backups=1, hostname="fuzz")


class FuzzDaemon(daemon.Daemon):
    """The real Daemon's admin operations, on a router set up as ``Daemon.start`` does
    (ring, outputs, router) without its sockets and signal handlers."""

    def __init__(self, settings_, name: str) -> None:
        super().__init__(settings_)
        self.ctx = CTX
        self.ring_path = os.path.join(SCRATCH, f"ring-{name}")

    def start_routing(self, max_ring_kb: int = 1024) -> None:
        size = min(self.settings.log_buffer_size, max_ring_kb)
        if size > 0:
            self.ring = RingBuffer(size * 1024, self.ring_path)
        outputs = self._build_outputs(self._effective_specs(self.output_specs, self.level),
                                      strict=False)
        self.router = Router(RouterState(FilterSet(self.filters, self.level), outputs),
                             self.ring, dump_fallback=self._fallback_output)
        # records no output takes go to the default chain (confined), as Daemon.start sets up
        fallback = getattr(daemon, "Fallback", None)
        if fallback is not None and hasattr(self, "_open_fallback"):
            self.router.fallback = fallback(self._open_fallback)

    def _is_default_file(self, spec) -> bool:
        return False          # the default file's directory is never made on the host

    def _fallback_output(self):
        return file_output.FileOutput(
            specs.OutputSpec(1, "file", os.path.join(SCRATCH, "fallback.log")), self.ctx)

    def close(self) -> None:
        if self.router is not None:
            self.router.flush()
            self.router.close()
            if getattr(self.router, "fallback", None) is not None:
                self.router.fallback.close()
        if self.ring is not None:
            self.ring.close()
        self.loop.close()


# -- the line property: no string a client sends forges a line ------------------------------
_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (-?\d+|None): ")
VIOLATIONS: list = []


class LineCheck(Output):
    """A text output that writes nothing and checks every line it is handed: one record is
    one line that starts with the time and the record's own (trusted) pid, and every further
    row of it starts with ``CONTINUATION``; a dump holds only such rows between its banners.
    It cannot raise (the router would count and swallow it): it notes, ``check()`` raises."""

    text = True

    def handle(self, record, line) -> None:
        rows = line.split("\n")
        head = _LINE.match(rows[0])
        if head is None or head.group(1) != str(record.pid) or rows[-1] != "" or any(
                not row.startswith(textformat.CONTINUATION) for row in rows[1:-1]):
            VIOLATIONS.append(f"record of pid {record.pid} printed as {line!r}")
        self.written += 1

    def write_text(self, text) -> None:
        inside = False
        for row in text.split("\n"):
            if row.strip().startswith("====== "):
                inside = row.strip().startswith("====== start")
            elif inside and row and not row.startswith(textformat.CONTINUATION) \
                    and not _LINE.match(row):
                VIOLATIONS.append(f"dump row {row!r}")


def check() -> None:
    """Raise what the line checks noted during the last input."""
    if VIOLATIONS:
        found = VIOLATIONS[:3]
        VIOLATIONS.clear()
        raise AssertionError("forged line: " + "; ".join(found))


CHECK_SPEC = specs.OutputSpec(1, "fuzz-check")     # no output string can name it


def add_check(d) -> None:
    """Adds a LineCheck at level 1 to *d*'s router (after the outputs the settings named)."""
    state = d.router.state
    d.router.apply(RouterState(state.filters, state.outputs + (
        LineCheck(CHECK_SPEC, CTX),)))


# -- profiles: the settings records are routed under -------------------------------------
class Profile:
    def __init__(self, name, level, ring_kb, filters, outputs, chunk=0) -> None:
        self.name = name
        self.level = level
        self.ring_kb = ring_kb
        self.filters = filters
        self.outputs = outputs.replace("@", SCRATCH + "/")
        self.chunk = chunk      # the size of each read a stream target gets (0: whole)

    def settings(self):
        return settings.load(read_config_file=False, env={}, cwd=SCRATCH, flags={
            "log_level": self.level, "log_filters": self.filters,
            "log_outputs": self.outputs, "log_buffer_size": self.ring_kb})


PROFILES = (
    # the defaults: level 3, a 64 kB ring, no filters, a file output
    Profile("default", 3, 64, "", "3:file:@default.log"),
    Profile("debug-stacks", 1, 64, "1:+virlogd 1:+*", "1:file:@debug.log 1:stderr", chunk=7),
    Profile("level4", 4, 64, "", "4:file:@level4.log 2:stderr"),
    Profile("no-ring", 3, 0, "2:util 4:event", "1:file:@noring.log 3:stderr", chunk=1000),
    Profile("ring-1k", 2, 1, "4:virlogd.server 1:syslog 2:a*b?c[de]",
            "2:file:@ring1k.log 3:stderr"),
    Profile("filters", 3, 64, "3:remote 4:event 1:+qemu 2:util.* 1:+[!a-z]* 4:? 1:x",
            "1:file:@filters.log 2:stderr 2:syslog:libvirtd 3:journald"),
)


def make_daemons():
    made = []
    for profile in PROFILES:
        s = profile.settings()
        if s.problems or s.fatal:
            raise SystemExit(f"fuzz: profile {profile.name}: {s.problems} {s.fatal}")
        d = FuzzDaemon(s, profile.name)
        d.start_routing()
        add_check(d)
        d.profile = profile
        made.append(d)
    return made


# -- fakes of the event loop and of sockets -------------------------------------------------
class FakeLoop:
    def add_reader(self, fileobj, callback) -> None:
        pass

    def remove_reader(self, fileobj) -> None:
        pass


_next_fd = [10_000]


class FakeStream:
    """The daemon's end of a connected stream socket whose peer sent *data* in reads of
    *chunk* bytes (0: as much as the reader asks for), then closed."""

    CRED = b"".join(v.to_bytes(4, "little", signed=True) for v in (4242, 1000, 1000))

    def __init__(self, data: bytes, chunk: int = 0, cred: bytes = CRED) -> None:
        self.data = memoryview(data)
        self.pos = 0
        # small reads cut frames everywhere, but at most ~64 reads an input: more only slows
        # the fuzzer down (an input of 100 kB in 7-byte reads takes seconds)
        self.chunk = chunk and max(chunk, len(data) // 64 + 1)
        self.cred = cred
        self.sent = bytearray()
        _next_fd[0] += 1
        self.fd = _next_fd[0]

    def fileno(self) -> int:
        return self.fd

    def setblocking(self, flag) -> None:
        pass

    def getsockopt(self, level, option, size=0) -> bytes:
        return self.cred

    def recv_into(self, buf, size=0) -> int:
        want = len(buf) if not size else min(size, len(buf))
        if self.chunk:
            want = min(want, self.chunk)
        piece = self.data[self.pos:self.pos + want]
        buf[:len(piece)] = piece
        self.pos += len(piece)
        return len(piece)

    def recv(self, size) -> bytes:
        piece = bytes(self.data[self.pos:self.pos + (min(size, self.chunk) if self.chunk
                                                     else size)])
        self.pos += len(piece)
        return piece

    def send(self, data) -> int:
        if self.fd < 0:
            raise OSError(errno.EBADF, "closed")
        self.sent += data
        return len(data)

    def close(self) -> None:
        self.fd = -1


class FakeListener:
    def __init__(self) -> None:
        self.waiting = []

    def fileno(self) -> int:
        return 3

    def setblocking(self, flag) -> None:
        pass

    def accept(self):
        if not self.waiting:
            raise BlockingIOError(errno.EAGAIN, "nothing to accept")
        return self.waiting.pop(0), ""


class FakeDatagrams:
    """A datagram socket holding *queue* (datagrams with the sender's credentials)."""

    def __init__(self) -> None:
        self.queue = []

    def fileno(self) -> int:
        return 4

    def setblocking(self, flag) -> None:
        pass

    def setsockopt(self, *args) -> None:
        pass

    def recvmsg_into(self, buffers, ancbufsize=0, flags=0):
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        datagram, ancdata = self.queue.pop(0)
        view = buffers[0]
        size = min(len(view), len(datagram))
        view[:size] = datagram[:size]
        truncated = 0x20 if size < len(datagram) else 0      # MSG_TRUNC
        return size, ancdata, truncated, None


# -- main --------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit("usage: harness.py TARGET [libFuzzer flags] [corpus dirs]")
    name = sys.argv.pop(1)
    with _instrumented():
        target = importlib.import_module(f"target_{name}")
    sys.stderr.write(f"fuzz: target {name}, {check_twins()}\n")
    one_input = target.setup()
    if REPLAY:
        sys.exit(replay(one_input, [arg for arg in sys.argv[1:] if arg != "--replay"]))
    # libFuzzer's -merge runs argv[0] again through the shell: make it this same command
    sys.argv[0] = f"{sys.executable} {os.path.abspath(__file__)} {name}"
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def replay(one_input, paths) -> int:
    """Run each input (files, or every file of a directory) once; 1 if any raised."""
    import traceback
    files = []
    for path in paths:
        files += sorted(os.path.join(path, f) for f in os.listdir(path)) \
            if os.path.isdir(path) else [path]
    failed = 0
    for path in files:
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            one_input(data)
        except Exception:  # noqa: BLE001 - each finding is reported, then the next input
            failed += 1
            sys.stdout.write(f"FINDING {path}\n{traceback.format_exc()}\n")
    sys.stdout.write(f"fuzz: replayed {len(files)} input(s), {failed} finding(s)\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
