"""The library in a real Python process: environment in, exact lines out."""
import re
import socket
import subprocess
import sys
import textwrap

from daemonproc import isolated_env

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (\d+): ")

PROGRAM = textwrap.dedent("""
    import os, virlogd
    print(os.getpid(), flush=True)
    log = virlogd.getLogger("qemu.monitor")
    def probe():
        log.debug("sent %s", "query-status")
        log.info("info line")
        log.warning("two\\nlines")
        virlogd.getLogger("remote.rpc").warning("hidden by its filter")
        virlogd.getLogger("util.json").error("shown, no filter")
    probe()
""")


def run_program(tmp_path, program=PROGRAM, **env):
    result = subprocess.run([sys.executable, "-c", program],
                            env=isolated_env(tmp_path, **env), capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    return result


def strip(text, pid):
    """Each line without its timestamp, checking the timestamp and pid are there."""
    out = []
    for line in text.splitlines():
        found = STAMP.match(line)
        if found:
            assert found.group(1) == str(pid), line
            out.append(line[found.end():])
        else:
            out.append("<no stamp> " + line)
    return out


def test_environment_filters_and_outputs_shape_what_reaches_stderr_and_a_file(tmp_path):
    """LIBVIRT_DEBUG/FILTERS/OUTPUTS: each output gets headers, then what its level lets in."""
    log = tmp_path / "app.log"
    result = run_program(tmp_path, LIBVIRT_DEBUG="3",
                         LIBVIRT_LOG_FILTERS="1:qemu 4:remote",
                         LIBVIRT_LOG_OUTPUTS=f"3:stderr 1:file:{log}")
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.split()[0])
    headers = ["info : virlogd version: 1.0", f"info : hostname: {socket.gethostname()}"]
    assert strip(result.stderr, pid) == headers + [
        "warning : probe:8 : two",
        "<no stamp>   | lines",
        "error : probe:10 : shown, no filter",
    ]
    assert strip(log.read_text(), pid) == headers + [
        "debug : probe:6 : sent query-status",
        "info : probe:7 : info line",
        "warning : probe:8 : two",
        "<no stamp>   | lines",
        "error : probe:10 : shown, no filter",
    ]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_bad_environment_values_warn_and_keep_what_came_before(tmp_path):
    """An invalid LIBVIRT_DEBUG is ignored; a bad output token keeps the ones before it."""
    result = run_program(tmp_path, LIBVIRT_DEBUG="chatty",
                         LIBVIRT_LOG_OUTPUTS="4:stderr 1:nowhere 1:stderr")
    pid = int(result.stdout.split()[0])
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "virlogd: warning: LIBVIRT_DEBUG: invalid priority 'chatty' (expected 1-4 or debug, "
        "info, warning, error); ignored",
        "virlogd: warning: LIBVIRT_LOG_OUTPUTS: Invalid destination 'nowhere' for output "
        "'1:nowhere' in log_outputs \"4:stderr 1:nowhere 1:stderr\"; the entries before it "
        "apply, the rest is ignored",
    ]
    assert strip("\n".join(lines[2:]), pid)[2:] == ["error : probe:10 : shown, no filter"]


def test_configure_is_all_or_nothing_and_dump_buffer_shows_hidden_debug(tmp_path):
    """A bad configure() raises and changes nothing; dump_buffer writes the ring."""
    program = textwrap.dedent("""
        import os, virlogd
        print(os.getpid(), flush=True)
        virlogd.configure(level=4, outputs="1:stderr", buffer_size=64)
        try:
            virlogd.configure(filters="1:a 9:b")
        except virlogd.ConfigError as err:
            print(err, flush=True)
        log = virlogd.getLogger("x")
        log.debug("kept only in the ring")
        virlogd.dump_buffer("Caught User-defined signal 2")
    """)
    result = run_program(tmp_path, program)
    pid, message = result.stdout.splitlines()
    assert message == "invalid filters \"1:a 9:b\": Invalid priority '9' for filter '9:b'"
    text = result.stderr
    assert text.startswith("Caught User-defined signal 2 dumping internal log buffer:\n\n"
                           "    ====== start of log =====\n\n")
    assert text.endswith("\n     ====== end of log =====\n")
    body = text.split("====== start of log =====\n\n")[1].split("\n     ======")[0]
    assert strip(body, pid) == ["debug : <module>:10 : kept only in the ring"]


def test_calls_only_the_ring_keeps_dump_like_routed_ones_in_order(tmp_path):
    """Below the filters, debug/info/warning go straight into the ring (no Record is built);
    the dump shows them with their function, line and arguments, in call order with the
    records that were routed to the outputs."""
    program = textwrap.dedent("""
        import os, virlogd
        print(os.getpid(), flush=True)
        virlogd.configure(level=4, filters="1:shown", outputs="1:stderr", buffer_size=64)
        hidden, shown = virlogd.getLogger("hidden"), virlogd.getLogger("shown.x")
        def probe():
            hidden.debug("d %s %d", "arg", 7)
            hidden.info("i %r", [1])
            shown.debug("routed")
            hidden.warning("w %%s kept")
            hidden.warning("fields go the long way", message_id="m1")
        probe()
        virlogd.dump_buffer("Dump")
    """)
    result = run_program(tmp_path, program)
    assert result.returncode == 0, result.stderr
    pid = result.stdout.strip()
    before = strip(result.stderr.split("Dump dumping")[0], pid)
    assert before[2:] == ["debug : probe:9 : routed"]          # after the two headers
    body = result.stderr.split("====== start of log =====\n\n")[1].split("\n     ======")[0]
    assert strip(body, pid) == ["debug : probe:7 : d arg 7",
                                "info : probe:8 : i [1]",
                                "debug : probe:9 : routed",
                                "warning : probe:10 : w %%s kept",
                                "warning : probe:11 : fields go the long way"]


def test_calls_only_the_ring_keeps_are_never_lost_to_a_concurrent_dump(tmp_path):
    """With the C ring, such calls append without the router's lock; a dump takes the ring in
    one step, so each record is in exactly one dump (or still in the ring), in its thread's
    order."""
    program = textwrap.dedent("""
        import sys, threading, virlogd
        sys.setswitchinterval(1e-5)       # switch threads often: dumps land mid-stream
        virlogd.configure(level=4, outputs="4:file:%s", buffer_size=16384)
        log = virlogd.getLogger("busy")
        halfway = threading.Event()       # set after 2 dumps: both land mid-stream
        def work(tid):
            for i in range(20000):
                if i == 10000:
                    halfway.wait()
                log.debug("t%%d %%d", tid, i)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        dumps = 0
        while any(t.is_alive() for t in threads):
            dumps += 1
            virlogd.dump_buffer("Dump")
            if dumps >= 2:
                halfway.set()
        for t in threads:
            t.join()
        virlogd.dump_buffer("Dump")
        print(dumps + 1)
    """ % (tmp_path / "out.log"))
    result = run_program(tmp_path, program)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out.log").read_text()
    assert text.count("Dump dumping internal log buffer") == int(result.stdout) > 2
    seen = {t: [] for t in range(4)}
    for tid, i in re.findall(r": debug : <?\w+>?:\d+ : t(\d) (\d+)$", text, re.M):
        seen[int(tid)].append(int(i))
    assert all(seen[t] == list(range(20000)) for t in range(4))
