"""Hostile admin requests against a real daemon: always one clear answer, never a crash.

Random lines (JSON or not), random commands and random arguments to the admin socket and to
``virlogd-admin``. Every answer is one JSON object; a refusal is a sentence, never a
traceback or an "internal error"; a refused change leaves the running settings untouched;
the daemon keeps serving its clients throughout.
"""
import json
import os
import socket

import pytest
from hypothesis import HealthCheck, assume, given, settings as hsettings, strategies as st

from daemonproc import Daemon, read_to_eof, read_until
from virlogd.daemon.admin import COMMANDS, MAX_REQUEST

SETTINGS = hsettings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    cwd = os.getcwd()
    os.chdir(tmp)            # relative output paths a random string names land in tmp
    try:
        d = Daemon(tmp, ["--log-filters", "3:keep"], outputs=f"1:file:{tmp / 'out.log'}")
    finally:
        os.chdir(cwd)
    d.log = tmp / "out.log"
    d.initial = {cmd: ask(d, {"cmd": cmd})["result"]
                 for cmd in ("daemon-log-filters", "daemon-log-outputs", "daemon-log-level")}
    yield d
    alive = d.proc.poll() is None
    assert d.stop() == 0 and alive, d.stderr()
    assert "Traceback" not in d.stderr()


def ask_raw(d, data):
    """Send *data* on a fresh admin connection; every answer line until the daemon closes
    (or 10 s without one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(d.admin_socket)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_to_eof(sock)
    return [json.loads(line) for line in data.splitlines()]


def ask(d, request):
    (answer,) = ask_raw(d, json.dumps(request).encode() + b"\n")
    return answer


def assert_clear(answer):
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        error = answer["error"]
        assert isinstance(error, str) and error.strip(), answer
        assert "Traceback" not in error and not error.startswith("internal error"), error


def restore(d):
    for cmd, value in d.initial.items():
        if ask(d, {"cmd": cmd})["result"] != value:
            assert ask(d, {"cmd": cmd, "args": [str(value)]})["ok"]


def still_serving(d):
    assert d.proc.poll() is None, d.stderr()
    assert ask(d, {"cmd": "daemon-log-level"})["ok"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)
commands = st.one_of(st.sampled_from(COMMANDS), st.text(max_size=20), json_values)
arguments = st.one_of(st.lists(st.text(max_size=60), max_size=3), json_values,
                      st.lists(st.sampled_from(["1:file:rel.log", "3:stderr", "4:journald",
                                                "1:*", "0:x", "5:y", "1:file:", "x:file:/a",
                                                "debug", "9", "", " ", "1 2", "1:file:/proc/1/x",
                                                "1:file:/nonexistent/dir/x.log"]), max_size=2))


@SETTINGS
@given(request=st.dictionaries(st.sampled_from(["cmd", "args", "extra"]),
                               st.one_of(commands, arguments), max_size=3))
def test_any_json_request_gets_one_clear_answer(daemon, request):
    """Random JSON objects: one answer each, ok or a sentence; refusals change nothing."""
    args = request.get("args")
    assume("remote" not in json.dumps(args))       # the network is not ours to probe
    before = {cmd: ask(daemon, {"cmd": cmd})["result"] for cmd in daemon.initial}
    (answer,) = ask_raw(daemon, json.dumps(request).encode() + b"\n")
    assert_clear(answer)
    if not answer["ok"]:
        after = {cmd: ask(daemon, {"cmd": cmd})["result"] for cmd in daemon.initial}
        assert after == before, "a refused request changed the running settings"
    restore(daemon)
    still_serving(daemon)


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300),
                      st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
                               max_size=5).map(lambda ls: b"\n".join(ls) + b"\n"),
                      st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_bytes_on_the_admin_socket_get_answers_not_a_crash(daemon, data):
    """Random bytes and lines: one clear answer per non-blank line, the daemon serves on."""
    assume(b"remote" not in data)
    answers = ask_raw(daemon, data)
    lines = [line for line in data.split(b"\n")[:-1] if line.strip()] if b"\n" in data else []
    assert len(answers) == len(lines) or (len(answers) == 1 and not answers[0]["ok"])
    for answer in answers:
        assert_clear(answer)
    restore(daemon)
    still_serving(daemon)


def test_an_oversized_request_is_refused_with_the_limit(daemon):
    """A line beyond 64 kB: refused, with the limit in the words, the connection closed."""
    answers = ask_raw(daemon, b'{"cmd": "stats", "args": ["' + b"x" * (MAX_REQUEST + 10)
                      + b'"]}\n')
    assert answers == [{"ok": False, "error": f"request too large (limit {MAX_REQUEST} bytes "
                                              f"per line)"}]
    still_serving(daemon)


def test_random_arguments_to_virlogd_admin_end_in_a_status_not_a_traceback(daemon):
    """The command line: every refused argument is one 'virlogd-admin: error:' line."""
    cases = [["daemon-log-filters", "9:foo"], ["daemon-log-outputs", "1:nowhere"],
             ["daemon-log-level", "eleven"], ["dump", "extra"], ["no-such-command"],
             ["daemon-log-filters", "1:a", "2:b"], ["stats", "--json", "--bogus"],
             ["daemon-log-outputs", "1:file:/nonexistent/dir/x.log"], ["\udcff"]]
    for args in cases:
        run = daemon.admin(*args)
        assert run.returncode != 0, args
        assert "Traceback" not in run.stderr, (args, run.stderr)
        assert run.stderr.startswith(("virlogd-admin: error: ", "usage: ")), (args, run.stderr)
    assert daemon.admin("daemon-log-filters").stdout == " Logging filters: 3:keep\n"
    still_serving(daemon)
    daemon.virlog("-p", "error", "-s", "keep", "still logging after hostile admin")
    read_until(daemon.log, "still logging after hostile admin")
