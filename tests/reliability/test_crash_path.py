"""The crash path is async-signal-safe: a fault while the router's lock is held kills the
daemon at once (no hang), and the next start dumps every record the crash left in the ring.

The trigger (``virlogd.testhooks``, ``segv-locked``): the event loop takes the router's lock
and a second thread reads address 0, as a fault in C code in the middle of routing would.
A fatal-signal handler that routed a dump (what ``crash.py`` did before) waits for that lock
forever; ``faulthandler`` writes the traceback and re-raises.
"""
import signal
import time

from daemonproc import Daemon, isolated_env, read_until

START = "    ====== start of log =====\n"
END = "     ====== end of log =====\n"
RECOVERED = ("Previous virlogd run ended without stopping cleanly; dumping recovered log "
             "buffer of a previous run:\n\n")


def recovered_records(text):
    assert RECOVERED + START in text, text
    body = text.split(RECOVERED + START, 1)[1].split(f"\n{END}", 1)[0]
    return [line.split(" : ")[-1] for line in body.splitlines() if line]


def test_a_fault_while_the_router_lock_is_held_kills_promptly_and_loses_nothing(tmp_path):
    log = tmp_path / "out.log"
    env = isolated_env(tmp_path, VIRLOGD_TEST_HOOKS="1")
    d = Daemon(tmp_path, outputs=f"3:file:{log}", env=env)
    lines = "".join(f"debug before the crash {i}\n" for i in range(200))
    assert d.virlog("-p", "debug", "-s", "qemu", input=lines).returncode == 0
    try:
        started = time.monotonic()
        d.virlog("-p", "debug", "-s", "virlogd.test.crash", "segv-locked")
        status = d.proc.wait(20)           # a hang would raise TimeoutExpired here
        took = time.monotonic() - started
        print(f"\ndied of signal {-status} {took:.2f} s after the trigger was sent")
        assert status == -signal.SIGSEGV
        stderr = d.stderr()
        assert "Fatal Python error: Segmentation fault" in stderr
        assert "_crash" in stderr            # faulthandler's traceback names the frames
    finally:
        d.stop(signal.SIGKILL)               # a hung daemon is not left behind
    again = Daemon(tmp_path, outputs=f"3:file:{log}", env=env)
    try:
        records = recovered_records(read_until(log, END))
    finally:
        assert again.stop() == 0
    assert records[-201:] == [f"debug before the crash {i}" for i in range(200)] + \
        ["segv-locked"]
