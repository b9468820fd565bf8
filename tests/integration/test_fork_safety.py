"""Forked and short-lived processes lose nothing (pre-fork servers, ``multiprocessing``).

A record reaches the kernel before the logging call returns whenever the socket can take it
(a non-blocking send from the caller's thread), and ``os.register_at_fork`` gives a child a
clean client. So workers that end with ``os._exit`` (``multiprocessing``, a bare
``os.fork``), which run no exit hook and have no background thread of their parent, still
deliver every record. Each test runs a real program against a real ``virlogd`` and reads
the records back from the daemon's real file output; each runs with the C twins and in pure
Python.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from daemonproc import Daemon, wait_for

MODES = [pytest.param({}, id="c"), pytest.param({"VIRLOGD_PURE_PYTHON": "1"}, id="pure")]


@pytest.fixture
def daemon(tmp_path):
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-level", "1"])
    d.log = log
    yield d
    d.stop()


def run(tmp_path, daemon, program, mode, *args):
    """Run *program* (a file, so that spawn and forkserver can import it) with the daemon's
    socket as argv[1]; it must exit 0 and write nothing on stderr."""
    path = tmp_path / "program.py"
    path.write_text(textwrap.dedent(program))
    env = dict(daemon.env, **mode)
    proc = subprocess.run([sys.executable, str(path), daemon.socket, *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    return proc.stdout


def lines(daemon, pattern, count):
    """The file output's lines matching *pattern*, once there are *count* of them."""
    def found():
        text = daemon.log.read_text() if daemon.log.exists() else ""
        got = re.findall(pattern, text, re.M)
        return got if len(got) >= count else None
    try:
        return wait_for(found, 20, f"{count} lines matching {pattern!r}")
    except AssertionError:
        text = daemon.log.read_text() if daemon.log.exists() else ""
        got = re.findall(pattern, text, re.M)
        raise AssertionError(f"{len(got)} of {count} records arrived") from None


WORKERS = """
    import logging, multiprocessing, os, sys
    import virlogd

    def logger():
        log = logging.getLogger("worker")
        if not log.handlers:            # spawn and forkserver: a new interpreter each
            log.addHandler(virlogd.VirlogdHandler(sys.argv[1]))
            log.setLevel(logging.INFO)
            log.propagate = False
        return log

    def work(n):
        logger().warning("worker %d done in %d", n, os.getpid())

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[2])
        logger().warning("parent starts %d", os.getpid())
        procs = [ctx.Process(target=work, args=(n,)) for n in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print(" ".join(str(p.pid) for p in procs))
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
"""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_workers_deliver_their_records(tmp_path, daemon, method, mode):
    """Four workers each log one warning and return (multiprocessing ends them with
    os._exit): all four records arrive, each under its worker's pid, and the parent's one
    record once (a forked worker does not send its parent's records again)."""
    pids = run(tmp_path, daemon, WORKERS, mode, method).split()
    got = lines(daemon, r": (\d+): warning : (?:.* : )?worker (\d) done in (\d+)$", 4)
    assert sorted(got) == sorted((pid, str(n), pid) for n, pid in enumerate(pids))
    parent = lines(daemon, r": (\d+): warning : (?:.* : )?parent starts \d+$", 1)
    assert len(parent) == 1


@pytest.mark.parametrize("mode", MODES)
def test_records_logged_just_before_os_exit_arrive(tmp_path, daemon, mode):
    """500 records, then os._exit(0) (no atexit, no flush): all 500 arrive, in order."""
    run(tmp_path, daemon, """
        import logging, os, sys
        import virlogd
        log = logging.getLogger("burst")
        log.addHandler(virlogd.VirlogdHandler(sys.argv[1]))
        log.setLevel(logging.INFO)
        log.propagate = False
        for i in range(500):
            log.info("burst %d", i)
        sys.stdout.flush()
        os._exit(0)
    """, mode)
    got = lines(daemon, r": \d+: info : (?:.* : )?burst (\d+)$", 500)
    assert [int(i) for i in got] == list(range(500))


@pytest.mark.parametrize("mode", MODES)
def test_os_fork_children_that_os_exit_lose_nothing(tmp_path, daemon, mode):
    """A parent connected and logging forks four children; each logs 100 records and ends
    with os._exit(0): all 400 arrive, under the children's pids, and none of the parent's
    records twice."""
    out = run(tmp_path, daemon, """
        import logging, os, sys
        import virlogd
        log = logging.getLogger("forks")
        log.addHandler(virlogd.VirlogdHandler(sys.argv[1]))
        log.setLevel(logging.INFO)
        log.propagate = False
        log.info("parent before the forks")
        children = []
        for n in range(4):
            pid = os.fork()
            if pid == 0:
                for i in range(100):
                    log.info("child %d record %d", n, i)
                os._exit(0)
            children.append(pid)
        for pid in children:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        print(" ".join(map(str, children)))
    """, mode)
    children = out.split()
    got = lines(daemon, r": (\d+): info : (?:.* : )?child (\d) record (\d+)$", 400)
    for n, pid in enumerate(children):
        assert [int(i) for p, c, i in got if c == str(n)] == list(range(100))
        assert {p for p, c, i in got if c == str(n)} == {pid}
    assert len(lines(daemon, r": \d+: info : (?:.* : )?parent before the forks$", 1)) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_child_forked_while_a_parents_thread_holds_the_clients_locks_logs(tmp_path, daemon,
                                                                           mode):
    """A thread of the parent holds the client's locks (as a writer does) at the moment of
    the fork: the child's client has fresh ones, so its record goes out instead of hanging."""
    run(tmp_path, daemon, """
        import logging, os, sys, threading
        import virlogd
        handler = virlogd.VirlogdHandler(sys.argv[1])
        log = logging.getLogger("locks")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        log.info("parent first")
        held, release = threading.Event(), threading.Event()
        def writer():
            with handler.client._send_lock, handler.client._lock:
                held.set()
                release.wait()
        thread = threading.Thread(target=writer)
        thread.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            log.info("child %d despite the locks", os.getpid())
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        release.set()
        thread.join()
    """, mode)
    assert len(lines(daemon, r": (\d+): info : (?:.* : )?child \1 despite the locks$", 1)) == 1
